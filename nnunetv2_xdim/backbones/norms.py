"""Normalisation of a pretrained encoder.

nnU-Net trains 3D with batch size ~2 and 2D with tens of samples: BatchNorm statistics range from fine to
noise. Each option keeps the pretrained affine parameters (and parameter names, so ImageNet state dicts
still load after the same conversion):
- ``batch``: pretrained BatchNorm, statistics updated in training (timm default);
- ``frozen``: BatchNorm with the ImageNet statistics and affine parameters frozen (timm's FrozenBatchNorm);
- ``instance``: per-sample statistics (what nnU-Net uses), pretrained gamma/beta kept and trained;
- ``group``: GroupNorm, pretrained gamma/beta kept and trained.
"""
import torch
import torch.nn.functional as F
from torch import nn
from timm.layers.norm_act import BatchNormAct2d, FrozenBatchNorm2d, FrozenBatchNormAct2d

NORMS = ("batch", "frozen", "instance", "group")


def _groups(channels: int, target: int = 32) -> int:
    # the largest divisor of `channels` not above `target` (GroupNorm needs channels % groups == 0)
    for g in range(min(target, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class PerSampleNormAct(nn.Module):
    """Instance or group normalisation with the affine parameters (and activation) of a BatchNorm it replaces."""

    def __init__(self, num_features: int, kind: str, eps: float = 1e-5, act: nn.Module = None,
                 drop: nn.Module = None):
        super().__init__()
        if kind not in ("instance", "group"):
            raise ValueError(kind)
        self.kind = kind
        self.num_features = num_features
        self.eps = eps
        self.num_groups = num_features if kind == "instance" else _groups(num_features)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.drop = drop if drop is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    def forward(self, x):
        # group_norm with one group per channel is instance norm; it handles 2D and 3D alike
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return self.act(self.drop(x))

    def extra_repr(self):
        return f"{self.num_features}, kind={self.kind}, groups={self.num_groups}"


def _is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def convert_norms(module: nn.Module, norm: str) -> nn.Module:
    """Convert every BatchNorm in `module` (in place where possible); returns the converted module."""
    if norm not in NORMS:
        raise ValueError(f"unknown encoder normalisation '{norm}', choose one of {NORMS}")
    if norm == "batch":
        return module
    if norm == "frozen":
        return _freeze_any(module)
    return _to_per_sample(module, norm)


class FrozenBatchNormNd(FrozenBatchNorm2d):
    """timm's FrozenBatchNorm2d (same buffers, so the same state-dict keys) for 2D and 3D inputs."""

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(shape) + bias.reshape(shape)


class FrozenBatchNormActNd(FrozenBatchNormAct2d):
    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return self.act(self.drop(x * scale.reshape(shape) + bias.reshape(shape)))


def _freeze_any(module: nn.Module) -> nn.Module:
    if _is_batchnorm(module):
        act = isinstance(module, BatchNormAct2d) or hasattr(module, "act")
        res = FrozenBatchNormActNd(module.num_features) if act else FrozenBatchNormNd(module.num_features)
        if act:
            res.act, res.drop = module.act, module.drop
        res.weight.data = module.weight.data.clone()
        res.bias.data = module.bias.data.clone()
        res.running_mean.data = module.running_mean.data.clone()
        res.running_var.data = module.running_var.data.clone()
        res.eps = module.eps
        return res
    for name, child in module.named_children():
        new = _freeze_any(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _to_per_sample(module: nn.Module, kind: str) -> nn.Module:
    if _is_batchnorm(module) or isinstance(module, FrozenBatchNorm2d):
        res = PerSampleNormAct(module.num_features, kind, eps=module.eps,
                               act=getattr(module, "act", None), drop=getattr(module, "drop", None))
        if getattr(module, "weight", None) is not None:
            res.weight.data = module.weight.data.clone()
            res.bias.data = module.bias.data.clone()
        return res
    for name, child in module.named_children():
        new = _to_per_sample(child, kind)
        if new is not child:
            setattr(module, name, new)
    return module
