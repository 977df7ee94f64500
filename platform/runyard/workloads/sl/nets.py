"""The models of sl.linear and sl.convnet: a softmax linear classifier, ResNet and WideResNet.

This module imports torch only, so a bare GPU machine can load it by path
(benchmarks/gpu_check.py) without runyard's other dependencies.

- LinearModel: s = W x + b over the flattened image, one template per class (sl.linear).
- ResNet (He et al. 2016, "Deep Residual Learning"): depth 18/34 use basic blocks (two 3x3
  convs), 50/101/152 bottleneck blocks (1x1 -> 3x3 -> 1x1, 4x expansion); four stages of
  64*width, 128*width, 256*width, 512*width channels (x4 for bottlenecks).
- WideResNet (Zagoruyko & Komodakis 2016): pre-activation basic blocks, widths 16*k, 32*k,
  64*k (and 128*k with a 4th stage, as Chrabaszcz et al. 2017 use for 64x64 ImageNet);
  depth = 2 * stages * n + 4 for n blocks per stage (WRN-28-10: 3 stages, n = 4).

Stem: "imagenet" (7x7 stride-2 conv + 3x3 stride-2 max-pool, for 224 inputs) or "small"
(one 3x3 stride-1 conv, for 32 and 64 inputs); "auto" picks imagenet for inputs of 128 and
more. The classifier head is initialised with std 0.01 so the loss at init is -log(1/classes).
"""

from __future__ import annotations

import torch
from torch import nn

from runyard.workloads.sl.archs import RESNET_BLOCKS


class LinearModel(nn.Module):
    """sl.linear's model: s = W x + b over the flattened input; W is classes x features (a
    template per row)."""

    def __init__(self, features: int, classes: int, init_std: float, generator: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, features, generator=generator) * init_std)
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias



def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv3x3(cin, width, stride), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                  conv3x3(width, width), nn.BatchNorm2d(width))
        self.shortcut = _projection(cin, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))  # y = F(x) + x (He et al. eq. 1)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            conv3x3(width, width, stride), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = _projection(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _projection(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 conv (He et al.'s option B)."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.body = nn.Sequential(conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), conv3x3(cout, cout))
        self.shortcut = (None if stride == 1 and cin == cout
                         else nn.Conv2d(cin, cout, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.pre(x)
        skip = x if self.shortcut is None else self.shortcut(activated)
        return self.body(activated) + skip


def _stem(kind: str, channels: int, with_norm: bool) -> nn.Sequential:
    if kind == "imagenet":
        return nn.Sequential(nn.Conv2d(3, channels, 7, stride=2, padding=3, bias=False),
                             nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                             nn.MaxPool2d(3, stride=2, padding=1))
    layers: list[nn.Module] = [conv3x3(3, channels)]
    if with_norm:  # post-activation ResNets normalise after the stem; pre-activation WRNs do not
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ConvNet(nn.Module):
    """stem -> residual stages -> global average pool -> linear classifier."""

    def __init__(self, stem: nn.Module, stages: nn.Module, head_norm: nn.Module, features: int,
                 num_classes: int):
        super().__init__()
        self.stem, self.stages, self.head_norm = stem, stages, head_norm
        self.classifier = nn.Linear(features, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_norm(self.stages(self.stem(x)))
        return self.classifier(x.mean(dim=(2, 3)))


def resolve_stem(stem: str, image_size: int) -> str:
    return ("imagenet" if image_size >= 128 else "small") if stem == "auto" else stem


def build_convnet(arch: str, depth: int, width: float, num_classes: int, image_size: int,
                  stem: str = "auto", stages: int = 3, dropout: float = 0.0) -> ConvNet:
    stem_kind = resolve_stem(stem, image_size)
    if arch == "resnet":
        kind, counts = RESNET_BLOCKS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        base = max(1, round(64 * width))
        layers, cin = [], base
        for index, count in enumerate(counts):
            planes = base * 2**index
            for number in range(count):
                stride = 2 if index > 0 and number == 0 else 1
                layers.append(block(cin, planes, stride))
                cin = planes * block.expansion
        return ConvNet(_stem(stem_kind, base, True), nn.Sequential(*layers), nn.Identity(), cin,
                       num_classes)
    per_stage = (depth - 4) // (2 * stages)
    widths = [max(1, round(16 * width * 2**index)) for index in range(stages)]
    layers, cin = [], 16
    for index, cout in enumerate(widths):
        for number in range(per_stage):
            layers.append(WideBlock(cin, cout, 2 if index > 0 and number == 0 else 1, dropout))
            cin = cout
    head_norm = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))  # pre-activation ends here
    return ConvNet(_stem(stem_kind, 16, False), nn.Sequential(*layers), head_norm, cin, num_classes)
