"""Real architectures defined in code (no torchvision, no downloads), random weights.

The tests and benchmarks export these with torch.onnx.export and check edgerun against
onnxruntime on them; the shapes follow the published models so op mixes and sizes are real.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


def _bn_act(conv: nn.Module, out_ch: int, act: nn.Module | None) -> nn.Sequential:
    layers = [conv, nn.BatchNorm2d(out_ch)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


def conv_bn(
    in_ch: int, out_ch: int, k: int, stride: int = 1, groups: int = 1, act: nn.Module | None = None
) -> nn.Sequential:
    conv = nn.Conv2d(in_ch, out_ch, k, stride, k // 2, groups=groups, bias=False)
    return _bn_act(conv, out_ch, act)


# -- ResNet-18 (He et al. 2015) ------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_ch, out_ch, 3, stride, act=nn.ReLU(inplace=True))
        self.conv2 = conv_bn(out_ch, out_ch, 3)
        self.down = (
            conv_bn(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.down(x))


class ResNet18(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn(3, 64, 7, 2, act=nn.ReLU(inplace=True)), nn.MaxPool2d(3, 2, 1)
        )
        blocks, ch = [], 64
        for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1)]
            ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# -- MobileNetV2 (Sandler et al. 2018) -------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers = [] if expand == 1 else [conv_bn(in_ch, hidden, 1, act=nn.ReLU6(inplace=True))]
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6(inplace=True)),
            conv_bn(hidden, out_ch, 1),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 32, 3, 2, act=nn.ReLU6(inplace=True))]
        ch = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(ch, c, s if i == 0 else 1, t))
                ch = c
        layers.append(conv_bn(ch, 1280, 1, act=nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# -- MobileNetV3-Small (Howard et al. 2019) ----------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        squeezed = max(8, (ch // 4 + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(ch, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * s


class V3Block(nn.Module):
    def __init__(
        self,
        in_ch: int,
        k: int,
        hidden: int,
        out_ch: int,
        se: bool,
        act: type[nn.Module],
        stride: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != in_ch:
            layers.append(conv_bn(in_ch, hidden, 1, act=act()))
        layers.append(conv_bn(hidden, hidden, k, stride, groups=hidden, act=act()))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(conv_bn(hidden, out_ch, 1))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV3Small(nn.Module):
    # kernel, expanded, out, SE, activation, stride (Table 2 of the paper)
    SETTINGS = (
        (3, 16, 16, True, nn.ReLU, 2),
        (3, 72, 24, False, nn.ReLU, 2),
        (3, 88, 24, False, nn.ReLU, 1),
        (5, 96, 40, True, nn.Hardswish, 2),
        (5, 240, 40, True, nn.Hardswish, 1),
        (5, 240, 40, True, nn.Hardswish, 1),
        (5, 120, 48, True, nn.Hardswish, 1),
        (5, 144, 48, True, nn.Hardswish, 1),
        (5, 288, 96, True, nn.Hardswish, 2),
        (5, 576, 96, True, nn.Hardswish, 1),
        (5, 576, 96, True, nn.Hardswish, 1),
    )

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 16, 3, 2, act=nn.Hardswish())]
        ch = 16
        for k, hidden, out_ch, se, act, stride in self.SETTINGS:
            layers.append(V3Block(ch, k, hidden, out_ch, se, act, stride))
            ch = out_ch
        layers.append(conv_bn(ch, 576, 1, act=nn.Hardswish()))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1024, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# -- a BERT/MiniLM-style encoder ----------------------------------------------------------------
class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.ff1 = nn.Linear(dim, ff)
        self.ff2 = nn.Linear(ff, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5 + bias
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = self.norm1(x + self.proj(attended))
        return self.norm2(x + self.ff2(F.gelu(self.ff1(x))))


class TinyBert(nn.Module):
    def __init__(
        self, vocab: int = 1000, dim: int = 128, heads: int = 4, layers: int = 2, max_len: int = 128
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, 4 * dim) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.norm(self.tokens(input_ids) + self.positions(positions))
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        return (x * mask).sum(1) / mask.sum(1).clamp(
            min=1.0
        )  # mean pooling, as sentence encoders do


# -- an LSTM sequence model -----------------------------------------------------------------------
class LstmTagger(nn.Module):
    def __init__(self, features: int = 40, hidden: int = 64, classes: int = 12) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out)


# -- a small YOLO-style detector body -----------------------------------------------------------
class TinyYolo(nn.Module):
    def __init__(self, classes: int = 4, anchors: int = 3) -> None:
        super().__init__()
        act = nn.SiLU
        self.c1 = conv_bn(3, 16, 3, 2, act=act())
        self.c2 = conv_bn(16, 32, 3, 2, act=act())
        self.c3 = conv_bn(32, 64, 3, 2, act=act())
        self.c4 = conv_bn(64, 128, 3, 2, act=act())
        self.lateral = conv_bn(128, 64, 1, act=act())
        self.fuse = conv_bn(128, 64, 3, act=act())
        self.outputs = anchors * (5 + classes)
        self.head_small = nn.Conv2d(64, self.outputs, 1)
        self.head_large = nn.Conv2d(64, self.outputs, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p3 = self.c3(self.c2(self.c1(x)))
        p4 = self.lateral(self.c4(p3))
        up = F.interpolate(p4, scale_factor=2.0, mode="nearest")
        fused = self.fuse(torch.cat([up, p3], 1))
        small = self.head_small(fused).sigmoid()
        boxes, scores = small.split([4 * 3, self.outputs - 12], dim=1)
        return torch.cat([boxes, scores], 1), self.head_large(p4).sigmoid()


def _image(size: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.rand(1, 3, size, size),)


def _tokens() -> tuple[torch.Tensor, ...]:
    ids = torch.randint(0, 1000, (1, 128))
    mask = torch.ones(1, 128, dtype=torch.int64)
    mask[:, 100:] = 0
    return ids, mask


# name -> (constructor, example inputs, input names, output names)
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple], list[str], list[str]]] = {
    "resnet18": (ResNet18, _image(224), ["image"], ["logits"]),
    "mobilenet_v2": (MobileNetV2, _image(224), ["image"], ["logits"]),
    "mobilenet_v3_small": (MobileNetV3Small, _image(224), ["image"], ["logits"]),
    "tiny_bert": (TinyBert, _tokens, ["input_ids", "attention_mask"], ["sentence_embedding"]),
    "lstm_tagger": (LstmTagger, lambda: (torch.randn(1, 50, 40),), ["features"], ["tags"]),
    "tiny_yolo": (TinyYolo, _image(256), ["image"], ["small", "large"]),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple]:
    """The model in eval mode with seeded random weights (BatchNorm statistics randomised too,
    so folding them is exercised), and an example input."""
    make, example, _, _ = MODELS[name]
    torch.manual_seed(seed)
    model = make().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return model, example()


def export(name: str, path: str, seed: int = 0, dynamo: bool = True) -> None:
    """torch.onnx.export of a zoo model, as a user of torch 2.x would do it."""
    model, example = build(name, seed)
    _, _, inputs, outputs = MODELS[name]
    torch.onnx.export(
        model,
        example,
        path,
        input_names=inputs,
        output_names=outputs,
        dynamo=dynamo,
        external_data=False,
    )
