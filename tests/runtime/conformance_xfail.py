"""Node-suite cases edgerun does not pass, each with its reason.

``XFAIL`` cases run and are expected to fail (an unexpected pass fails the suite, so a
fixed case leaves this list); ``SKIP`` cases cannot be judged by comparing values at all.
Regenerate the failing list with ``python bench/conformance.py --failures FILE``.
"""

from __future__ import annotations

_STRING_OPS = "string ops are outside the numpy runtime's scope (issue 3 excludes them)"
_ML_DOMAIN = "the ai.onnx.ml domain (classical ML) is not implemented"
_TRAINING = "training ops (ai.onnx.preview.training) are not implemented: edgerun runs inference"
_IMAGE = "ImageDecoder needs an image codec library; a numpy-only runtime has none"

_GROUPS: dict[str, list[str]] = {
    _STRING_OPS: [
        *(
            f"test_string_concat{s}"
            for s in ("", "_broadcasting", "_empty_string", "_utf8", "_zero_dimensional")
        ),
        *(
            f"test_string_split_{s}"
            for s in (
                "basic",
                "consecutive_delimiters",
                "empty_string_delimiter",
                "empty_tensor",
                "maxsplit",
                "no_delimiter",
            )
        ),
        *(
            f"test_strnormalizer_{s}"
            for s in (
                "export_monday_casesensintive_lower",
                "export_monday_casesensintive_nochangecase",
                "export_monday_casesensintive_upper",
                "export_monday_empty_output",
                "export_monday_insensintive_upper_twodim",
                "nostopwords_nochangecase",
            )
        ),
        *(f"test_regex_full_match_{s}" for s in ("basic", "email_domain", "empty")),
        *(
            f"test_tfidfvectorizer_tf_{s}"
            for s in (
                "batch_onlybigrams_skip0",
                "batch_onlybigrams_skip5",
                "batch_uniandbigrams_skip5",
                "only_bigrams_skip0",
                "onlybigrams_levelempty",
                "onlybigrams_skip5",
                "uniandbigrams_skip5",
            )
        ),
    ],
    _ML_DOMAIN: [
        "test_ai_onnx_ml_array_feature_extractor",
        "test_ai_onnx_ml_binarizer",
        "test_ai_onnx_ml_label_encoder_string_int",
        "test_ai_onnx_ml_label_encoder_string_int_no_default",
        "test_ai_onnx_ml_label_encoder_tensor_mapping",
        "test_ai_onnx_ml_label_encoder_tensor_value_only_mapping",
        "test_ai_onnx_ml_tree_ensemble_set_membership",
        "test_ai_onnx_ml_tree_ensemble_single_tree",
    ],
    _TRAINING: [
        "test_adagrad",
        "test_adagrad_multiple",
        "test_adam",
        "test_adam_multiple",
        "test_momentum",
        "test_momentum_multiple",
        "test_nesterov_momentum",
    ],
    _IMAGE: [
        f"test_image_decoder_decode_{s}"
        for s in (
            "bmp_rgb",
            "jpeg2k_rgb",
            "jpeg_bgr",
            "jpeg_grayscale",
            "jpeg_rgb",
            "png_rgb",
            "pnm_rgb",
            "tiff_rgb",
            "webp_rgb",
        )
    ],
    "onnx's runner cannot compare a sequence holding 0-d tensors (it calls len() on them); "
    "edgerun's output equals the expected list (bench/conformance.py compares it)": [
        "test_loop16_seq_none"
    ],
}

XFAIL: dict[str, str] = {name: reason for reason, names in _GROUPS.items() for name in names}

# Random outputs: onnx's expected values came from numpy's global RNG state, so a run
# can pass or fail by chance; shapes and dtypes are checked by tests/runtime/kernels.
SKIP: dict[str, str] = {
    f"test_bernoulli{s}": "random values cannot match onnx's recorded draw"
    for s in ("", "_double", "_double_expanded", "_expanded", "_seed", "_seed_expanded")
}
