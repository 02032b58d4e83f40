"""Shape, layout and constant kernels against onnxruntime, on cases the node suite skips:
old opsets, negative steps and pads, clamping, every Pad mode, Col2Im geometry."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TypeProto, helper, numpy_helper

from tests.runtime.onnx_backend import EdgerunBackend

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)


def both(op, feeds, opset=18, n_outputs=1, **attrs):
    """Run one ``op`` node on ``feeds`` (None: an absent optional input) in both runtimes."""
    names = [n if v is not None else "" for n, v in feeds.items()]
    while names and not names[-1]:
        names.pop()
    given = {n: v for n, v in feeds.items() if v is not None}
    outs = [f"y{i}" for i in range(n_outputs)]
    graph = helper.make_graph(
        [helper.make_node(op, names, outs, **attrs)],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in given.items()
        ],
        [helper.make_value_info(o, TypeProto()) for o in outs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, given)
    got = EdgerunBackend.prepare(model).run(given)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        np.testing.assert_array_equal(g, w)


def i64(*values):
    return np.array(values, np.int64)


X = rng.standard_normal((3, 4, 5)).astype(np.float32)


@pytest.mark.parametrize(
    "starts, ends, axes, steps",
    [
        ((-1,), (-1000,), (1,), (-1,)),
        ((10, 0), (-10, 9), (2, 0), (-2, 2)),
        ((2**62,), (-(2**62),), (-1,), (-3,)),
        ((1, -2), (1000, 2**63 - 1), None, None),
        ((0,), (0,), (1,), (1,)),
    ],
)
def test_slice_clamping(starts, ends, axes, steps):
    feeds = {"x": X, "s": i64(*starts), "e": i64(*ends)}
    feeds["a"] = None if axes is None else i64(*axes)
    feeds["t"] = None if steps is None else i64(*steps)
    both("Slice", feeds, opset=13)


def test_slice_1_attributes():
    both("Slice", {"x": X}, opset=9, starts=[1, -3], ends=[100, -1], axes=[0, 2])


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [(1, 2, 0, 2, 1, 1), (0, -1, 2, 1, 2, -2)])
def test_pad_modes(mode, pads):
    feeds = {"x": X, "p": i64(*pads), "v": np.array(1.5, np.float32)}
    both("Pad", feeds, opset=19, mode=mode)


def test_pad_axes_and_old_attribute_form():
    feeds = {"x": X, "p": i64(2, 1, 0, 3), "v": None, "a": i64(-1, 0)}
    both("Pad", feeds, opset=18, mode="edge")
    both("Pad", {"x": X}, opset=10, pads=[0, 1, 1, 0, 2, 0], value=-2.0)


@pytest.mark.parametrize("shape", [(2, 7), (5, 2), (3, 3)])
def test_center_crop_pad(shape):
    both("CenterCropPad", {"x": X, "s": i64(*shape)}, axes=[-1, 1])


@pytest.mark.parametrize(
    "opset, count, attrs, inputs",
    [
        (18, 3, {"num_outputs": 3}, {}),
        (18, 3, {"axis": 2}, {"split": i64(1, 0, 4)}),
        (11, 2, {"axis": -1, "split": [2, 3]}, {}),
        (11, 3, {}, {}),
        (13, 2, {"axis": 1}, {"split": i64(3, 1)}),
        (13, 5, {"axis": -1}, {}),
    ],
)
def test_split(opset, count, attrs, inputs):
    both("Split", {"x": X, **inputs}, opset=opset, n_outputs=count, **attrs)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    x = X.reshape(3, 1, 4, 1, 5)
    if opset < 13:
        both("Squeeze", {"x": x}, opset=opset, axes=[-2, 1])
        both("Squeeze", {"x": x}, opset=opset)
        both("Unsqueeze", {"x": X}, opset=opset, axes=[-1, 0, 3])
    else:
        both("Squeeze", {"x": x, "a": i64(-2, 1)}, opset=opset)
        both("Squeeze", {"x": x, "a": None}, opset=opset)
        both("Unsqueeze", {"x": X, "a": i64(-1, 0, 3)}, opset=opset)


@pytest.mark.parametrize("shape", [(0, -1), (-1, 0, 1), (3, 0, 0, 1)])
@pytest.mark.parametrize("opset", [13, 14])
def test_reshape(shape, opset):
    both("Reshape", {"x": X.reshape(3, 4, 5, 1), "s": i64(*shape)}, opset=opset)


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("groups", [2, 3])
def test_reshape_of_a_channel_shuffle_keeps_pixels_together(groups):
    # ShuffleNet: a convolution's channels-last output split into groups, the group axes
    # swapped (a view), then merged: the copy stays channels-last, values as numpy's
    from edgerun.runtime.kernels.shape import reshape_14

    x = _channels_last(rng.standard_normal((2, 6 * groups, 5, 7)).astype(np.float32))
    grouped = reshape_14(x, i64(2, groups, 6, 5, 7))
    assert np.shares_memory(grouped, x)
    shuffled = grouped.transpose(0, 2, 1, 3, 4)
    got = reshape_14(shuffled, i64(2, -1, 5, 7))
    np.testing.assert_array_equal(got, shuffled.reshape(2, 6 * groups, 5, 7))
    assert got.strides[1] == got.itemsize  # channels-last
    assert np.shares_memory(reshape_14(grouped, i64(2, -1, 5, 7)), x)  # merged back: a view


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_round_trip(mode):
    x = rng.standard_normal((2, 12, 3, 4)).astype(np.float32)
    both("DepthToSpace", {"x": x}, blocksize=2, mode=mode)
    both("SpaceToDepth", {"x": x}, blocksize=1)
    both("SpaceToDepth", {"x": rng.standard_normal((1, 2, 6, 9)).astype(np.float32)}, blocksize=3)


@pytest.mark.parametrize("k", [-5, -1, 0, 2, 9])
@pytest.mark.parametrize("upper", [0, 1])
def test_trilu(k, upper):
    both(
        "Trilu", {"x": rng.standard_normal((2, 3, 5)).astype(np.float32), "k": i64(k)}, upper=upper
    )


def test_expand_tile_eyelike_range():
    both("Expand", {"x": X[:, :1], "s": i64(2, 1, 1, 5)})
    both("Tile", {"x": X, "r": i64(2, 1, 3)})
    both("EyeLike", {"x": np.zeros((3, 5), np.int32)}, k=-1, dtype=1)
    both(
        "Range",
        {"s": np.array(5, np.int32), "l": np.array(-6, np.int32), "d": np.array(-3, np.int32)},
    )
    both(
        "Range",
        {
            "s": np.array(0.5, np.float32),
            "l": np.array(2.6, np.float32),
            "d": np.array(0.25, np.float32),
        },
    )


def test_constant_and_constant_of_shape():
    both("Constant", {}, value_ints=[1, -2])
    both("Constant", {}, value_float=2.5)
    both(
        "ConstantOfShape",
        {"s": i64(2, 0, 3)},
        value=numpy_helper.from_array(np.array([7], np.int8)),
    )
    both("ConstantOfShape", {"s": i64()})


def test_dropout_inference_mask():
    both("Dropout", {"x": X, "r": np.array(0.3, np.float32)}, opset=13, n_outputs=2)


@pytest.mark.parametrize(
    "image, block, attrs",
    [
        ((5, 5), (2, 2), {}),
        ((6, 7), (3, 2), {"strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [1, 2]}),
    ],
)
def test_col2im(image, block, attrs):
    nd = len(image)
    strides = attrs.get("strides", [1] * nd)
    pads = attrs.get("pads", [0] * 2 * nd)
    dil = attrs.get("dilations", [1] * nd)
    blocks = [
        (i + pads[d] + pads[d + nd] - dil[d] * (block[d] - 1) - 1) // strides[d] + 1
        for d, i in enumerate(image)
    ]
    x = rng.standard_normal((2, 3 * int(np.prod(block)), int(np.prod(blocks)))).astype(np.float32)
    both("Col2Im", {"x": x, "i": i64(*image), "b": i64(*block)}, **attrs)
