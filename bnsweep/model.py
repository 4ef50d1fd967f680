"""The study's Inception network and the simpler dropout-study CNN, Keras-faithful.

Both models return logits: the softmax of the study's Keras model lives in the
loss (`F.cross_entropy`), which is the same computation, numerically safer.

Keras semantics reproduced here (docs/design.md §2, the study's notebook):
- Conv2D(padding='same', use_bias=False) in both arms; `conv_bias=True` adds one.
- BatchNormalization(scale=False): learned shift β, no γ (it is 1), running
  stats updated with momentum 0.99 in Keras's convention, i.e. torch's 0.01.
- glorot_uniform kernels, zero biases and β.
- Other normalisations (config `norm`): BN with a learned scale, Group Normalization,
  Layer Normalization (GroupNorm with one group) or none, chosen once in `Blocks`.
- MaxPooling2D(padding='same') pads like TensorFlow: the extra row/column of an
  odd total padding goes at the bottom/right, and padded cells never win
  (bnsweep/pool.py, which also holds the CUDA kernels that run it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bnsweep.bn_relu import batch_norm_relu
from bnsweep.pool import TFSamePool

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) per module, GoogLeNet table
# as used by the study's notebook (docs/design.md §2). None marks a 3x3 stride-2 maxpool.
INCEPTION_PLAN: tuple = (
    ("3a", (64, 96, 128, 16, 32, 32)),
    ("3b", (128, 128, 192, 32, 96, 64)),
    None,
    ("4a", (192, 96, 208, 16, 48, 64)),
    ("4b", (160, 112, 224, 24, 64, 64)),
    ("4c", (128, 128, 256, 24, 64, 64)),
    ("4d", (112, 144, 288, 32, 64, 64)),
    ("4e", (256, 160, 320, 32, 128, 128)),
    None,
    ("5a", (256, 160, 320, 32, 128, 128)),
    ("5b", (384, 192, 384, 48, 128, 128)),
)

# SimpleCNN (the dropout study's model; the study does not define one, docs/design.md §2).
# Chosen: a small VGG-style net in the spirit of Keras's classic cifar10_cnn example,
#   [conv3x3 32, conv3x3 32, maxpool 2] [.. 64, 64 ..] [.. 128, 128 ..]  (32 -> 16 -> 8 -> 4 px)
#   flatten (4*4*128 = 2048) -> dropout -> dense 256 -> ReLU -> dropout -> dense 10.
# ~0.81 M parameters, most in the 2048x256 dense layer: trained on a few thousand
# images it memorises them (train acc -> 100 %, val acc stalls), which is the
# overfitting that dropout (Srivastava et al. 2014: on the dense layers' inputs, p=0.5)
# and BN are compared on.
SIMPLE_BLOCKS: tuple[int, ...] = (32, 64, 128)  # filters per block, two 3x3 convs each
SIMPLE_HIDDEN = 256  # units of the hidden dense layer


def scaled(channels: int, width: float) -> int:
    # The width multiplier for small runs; never below one channel.
    return max(1, int(round(channels * width)))


def glorot_uniform_(weight: torch.Tensor) -> None:
    # Keras glorot_uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) with
    # fan_in = Cin*k*k, fan_out = Cout*k*k. torch's xavier_uniform_ computes the
    # same fans from a [Cout, Cin, k, k] conv or [out, in] dense weight.
    nn.init.xavier_uniform_(weight)


class ShiftOnlyBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Keras BatchNormalization(scale=False): normalise, then add a learned β; no γ.

    γ is a constant 1: a non-persistent buffer, so it is neither trained nor saved
    and trainable-parameter counts match Keras's (β only). It is a tensor, not
    None, because CUDA's batch-norm backward (torch 2.11, channels_last, bf16)
    fails for a missing weight next to a bias that needs a gradient ("invalid
    gradient at index 2 - got [0]"), measured on an H200; CPU accepts both.
    """

    def __init__(self, channels: int, keras_momentum: float = 0.99, eps: float = 1e-3):
        # torch's momentum weighs the *new* batch statistic, Keras's the old running one
        # (rounded so that 0.99 gives 0.01, not 0.010000000000000009).
        super().__init__(channels, eps=eps, momentum=round(1.0 - keras_momentum, 12), affine=False)
        del self._parameters["weight"]  # affine=False registered weight=None; γ is the constant below
        self.register_buffer("weight", torch.ones(channels), persistent=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if getattr(self, "bias", None) is not None:
            nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 4):
            raise ValueError(f"expected 2D (dense) or 4D (conv) input, got {input.dim()}D")

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, shift only (Keras scale=False)"


class ScaledBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BN with a learned scale γ and shift β (torch's BatchNorm2d, Keras's scale=True) for
    conv (4D) and dense (2D) inputs alike; momentum and eps as the study's BN."""

    def __init__(self, channels: int, keras_momentum: float = 0.99, eps: float = 1e-3):
        super().__init__(channels, eps=eps, momentum=round(1.0 - keras_momentum, 12), affine=True)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 4):
            raise ValueError(f"expected 2D (dense) or 4D (conv) input, got {input.dim()}D")


def gn_groups(channels: int, groups: int = 32) -> int:
    """Groups of a GN layer of `channels`: the largest divisor of channels that is at most
    `groups` and leaves each group 2 or more channels (1 or 2 channels: one group).

    Wu & He 2018 (Group Normalization, ECCV; their Table 3, ResNet-50 on ImageNet) use 32
    groups; with 1 channel per group GN is instance norm, their worst (28.4 % top-1 error
    against 24.1 % at 32 groups), with 2 channels 25.6 %. The Inception has layers of 16
    channels at full width and of 1 to 24 at width 1/16, so a fixed 32 cannot hold."""
    cap = max(1, min(groups, channels // 2))
    return max(g for g in range(1, cap + 1) if channels % g == 0)


# Group Normalization's epsilon: torch's GroupNorm default, as in Wu & He's own code (1e-5).
GN_EPS = 1e-5


@dataclass(frozen=True)
class Blocks:
    """How every hidden layer is built, chosen once from the config and handed to the
    models (timm's `norm_layer` pattern): Conv2D('same') or Dense, its normalisation
    (the study's BN: Keras's scale=False, its momentum convention; or `norm`'s), then ReLU."""

    bn: bool = True
    bias: bool = False  # conv_bias: a bias on the hidden convs and dense layer (Keras use_bias)
    bn_momentum: float = 0.99  # Keras's convention: the weight of the old running statistic
    bn_eps: float = 1e-3
    fused_bn_relu: bool = False  # BN + ReLU as one op (bnsweep/bn_relu.py), the study's BN only
    norm: str | None = None  # config.NORMS; None: bn's choice (bn or none), as config.norm_of
    groups: int = 32  # GN's groups, at most (gn_groups)

    @property
    def kind(self) -> str:
        return self.norm or ("bn" if self.bn else "none")

    def conv(self, cin: int, cout: int, k: int) -> nn.Module:
        """Conv k x k ('same') -> the normalisation -> ReLU."""
        return ConvUnit(cin, cout, k, self)

    def norm_layer(self, channels: int) -> nn.Module | None:
        """The normalisation of a hidden layer of `channels` (conv or dense), or None."""
        kind = self.kind
        if kind == "bn":
            return ShiftOnlyBatchNorm(channels, self.bn_momentum, self.bn_eps)
        if kind == "bn_scale":
            return ScaledBatchNorm(channels, self.bn_momentum, self.bn_eps)
        if kind == "gn":  # per-channel γ and β, as Wu & He's GN (and LN) have
            return nn.GroupNorm(gn_groups(channels, self.groups), channels, eps=GN_EPS)
        if kind == "ln":  # LN of a conv layer: all channels and pixels of an image, GN with one group
            return nn.GroupNorm(1, channels, eps=GN_EPS)
        if kind == "none":
            return None
        raise ValueError(f"norm must be one of bn, bn_scale, gn, ln, none, got {kind!r}")


# On a CPU in channels-last, PyTorch's batch-norm kernels vectorise over the channels, so
# a layer with fewer channels than a vector holds runs them mostly one by one: in the
# width-1/16 BN step (one thread, 2-vCPU AMD EPYC with AVX2, torch 2.14, 2026-12-07) BN
# took a third of the step; a [50, 2, 32, 32] BN alone, forward + backward, 6.2 ms against
# 0.6 ms in NCHW, whose kernels vectorise over the 1,024 pixels. Below this many
# channels BN and its ReLU run in NCHW between two layout copies (their own kernels, so
# the same numbers as an NCHW model); from 16 on, channels-last was as fast or faster.
CPU_NCHW_BN_BELOW = 16


def _channels_last_on_cpu(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _Layout(torch.autograd.Function):
    """x copied into `memory_format`; its gradient copied back into the layout x had."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        ctx.back = torch.channels_last if _channels_last_on_cpu(x) else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.contiguous(memory_format=ctx.back), None


class _ChannelCat(torch.autograd.Function):
    """torch.cat on channels, whose backward hands each input a channels-last contiguous
    gradient. A plain cat's gradients are channel slices of the output's, strided in
    channels-last, and PyTorch's CPU ReLU backward on such a slice took 3-9x as long as
    on a contiguous copy, the copy included (same machine and date as above)."""

    @staticmethod
    def forward(ctx, *xs: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [x.shape[1] for x in xs]
        return torch.cat(xs, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return tuple(g.contiguous(memory_format=torch.channels_last) for g in grad.split(ctx.sizes, dim=1))


def cat_channels(xs: list[torch.Tensor]) -> torch.Tensor:
    if torch.is_grad_enabled() and all(_channels_last_on_cpu(x) for x in xs):
        return _ChannelCat.apply(*xs)
    return torch.cat(xs, dim=1)


class ConvUnit(nn.Sequential):
    # Conv2D('same') -> BatchNormalization (BN arm only; or norm's) -> ReLU, as every conv in
    # the study. fused_bn_relu: the study's BN and ReLU as one op (bnsweep/bn_relu.py, whose
    # kernel has no γ: never for bn_scale); the same modules and state, so checkpoints do not
    # tell the two apart.
    def __init__(self, cin: int, cout: int, k: int, blocks: Blocks):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=blocks.bias)]
        norm = blocks.norm_layer(cout)
        if norm is not None:
            layers.append(norm)
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.normed = norm is not None
        self.batch_norm = isinstance(norm, nn.modules.batchnorm._BatchNorm)
        self.fused_bn_relu = blocks.kind == "bn" and blocks.fused_bn_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.normed:
            return super().forward(x)
        y = self[0](x)
        if self.fused_bn_relu:
            return batch_norm_relu(y, self[1])
        if self.batch_norm and y.shape[1] < CPU_NCHW_BN_BELOW and _channels_last_on_cpu(y):
            y = self[2](self[1](_Layout.apply(y, torch.contiguous_format)))
            return _Layout.apply(y, torch.channels_last)
        return self[2](self[1](y))


class InceptionModule(nn.Module):
    def __init__(self, cin: int, filters: tuple[int, ...], blocks: Blocks):
        super().__init__()
        c1, r3, c3, r5, c5, cp = filters
        self.branch1 = blocks.conv(cin, c1, 1)
        self.branch3 = nn.Sequential(blocks.conv(cin, r3, 1), blocks.conv(r3, c3, 3))
        self.branch5 = nn.Sequential(blocks.conv(cin, r5, 1), blocks.conv(r5, c5, 5))
        # 3x3 stride-1 'same' pooling: symmetric padding 1, padded cells never win.
        self.branch_pool = nn.Sequential(TFSamePool(3, stride=1), blocks.conv(cin, cp, 1))
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Concatenation order of the notebook: 1x1, 3x3, 5x5, pool.
        return cat_channels([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)])


def _init_keras(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            glorot_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Inception(nn.Module):
    def __init__(self, blocks: Blocks = Blocks(), width: float = 1.0, dropout: float = 0.0, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3  # straight on the 32x32x3 image, no stem
        for entry in INCEPTION_PLAN:
            if entry is None:
                layers.append(TFSamePool(3, 2))  # 32 -> 16 -> 8 px
                continue
            _, filters = entry
            module = InceptionModule(cin, tuple(scaled(c, width) for c in filters), blocks)
            layers.append(module)
            cin = module.out_channels
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(cin, num_classes)  # Keras Dense(10): bias on
        _init_keras(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))  # GlobalAveragePooling2D
        return self.classifier(self.dropout(x))  # logits; softmax is in cross_entropy


class SimpleCNN(nn.Module):
    # See SIMPLE_BLOCKS above for the choice. The hidden layers (convs and dense 256)
    # follow the Inception's rules: bias only with conv_bias, BN after each in the BN
    # arm (or norm's normalisation); the output dense layer always has its bias, as Keras's Dense.
    def __init__(self, blocks: Blocks = Blocks(), width: float = 1.0, dropout: float = 0.0, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for filters in SIMPLE_BLOCKS:
            c = scaled(filters, width)
            # Keras MaxPooling2D() defaults: 2x2, stride 2, 'valid'.
            layers += [blocks.conv(cin, c, 3), blocks.conv(c, c, 3), nn.MaxPool2d(2)]
            cin = c
        self.features = nn.Sequential(*layers)
        flat = cin * (32 // 2 ** len(SIMPLE_BLOCKS)) ** 2
        hidden = scaled(SIMPLE_HIDDEN, width)
        drop = (lambda: nn.Dropout(dropout)) if dropout > 0 else nn.Identity
        head: list[nn.Module] = [nn.Flatten(), drop(), nn.Linear(flat, hidden, bias=blocks.bias)]
        norm = blocks.norm_layer(hidden)
        if norm is not None:
            head.append(norm)
        head += [nn.ReLU(inplace=True), drop(), nn.Linear(hidden, num_classes)]
        self.classifier = nn.Sequential(*head)
        _init_keras(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # logits; softmax is in cross_entropy


MODELS = {"inception": Inception, "simple": SimpleCNN}


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    # cfg: a dict from bnsweep.config.make_config (already validated there).
    try:
        cls = MODELS[cfg["model"]]
    except KeyError:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {cfg['model']!r}") from None
    blocks = Blocks(bn=cfg["bn"], bias=cfg["conv_bias"], bn_momentum=cfg["bn_momentum"], bn_eps=cfg["bn_eps"],
                    fused_bn_relu=cfg["fused_bn_relu"], norm=cfg.get("norm"), groups=cfg.get("groups", 32))
    return cls(blocks, width=cfg["width"], dropout=cfg["dropout"])
