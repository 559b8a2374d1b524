"""What the pretrained stem sees: the input scaled the way its ImageNet weights expect.

nnU-Net normalises each input channel by its scheme: z-score (MRI, ultrasound by default), CT windowing, or a
plain 0..1 scaling (`rgb_to_0_1`, `rescale_to_0_1`: natural images such as dermoscopy photographs). A
z-scored channel is already centred with unit spread, which is what ImageNet's mean/std normalisation makes of
an image. A 0..1 channel is not: the backbone's weights were trained on (x - mean) / std with the mean and std of
its pretrained configuration (ImageNet's, or 0.5 / 0.5 for the TensorFlow-trained EfficientNet-Lite). With
`input_norm = "backbone"`, the network applies that affine map to the 0..1 channels, as its first operation, in
training and prediction alike; other channels pass unchanged.

The channel mapping follows timm's adaptation of the first convolution: three channels are R, G, B; one channel
(timm sums the RGB filters) gets the mean of the three means and stds; more channels repeat R, G, B.
"""
from typing import Optional, Sequence

import torch
from torch import nn

INPUT_NORMS = ("none", "backbone")
ZERO_TO_ONE_SCHEMES = ("RGBTo01Normalization", "RescaleTo01Normalization")


def backbone_mean_std(backbone: str):
    import timm
    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is None or cfg.mean is None or cfg.std is None:
        raise ValueError(f"timm has no pretrained mean/std for backbone {backbone}: use input_norm = 'none'")
    return tuple(cfg.mean), tuple(cfg.std)


class InputAffine(nn.Module):
    """x * scale + shift per channel, with fixed (non-persistent) buffers: state dicts are unchanged."""

    def __init__(self, scale: Sequence[float], shift: Sequence[float], dim: int):
        super().__init__()
        shape = (1, len(scale)) + (1,) * dim
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(shape), persistent=False)
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).view(shape), persistent=False)

    def forward(self, x):
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)

    def extra_repr(self) -> str:
        return f"scale={self.scale.flatten().tolist()}, shift={self.shift.flatten().tolist()}"


def build_input_norm(input_norm: str, backbone: str, normalization_schemes: Sequence[str], num_input_channels: int,
                     dim: int) -> Optional[nn.Module]:
    """The input map for the network, or None when nothing changes (every channel passes as it is)."""
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"input_norm = {input_norm!r}: choose one of {INPUT_NORMS}")
    if input_norm == "none":
        return None
    mean, std = backbone_mean_std(backbone)
    n_image = len(normalization_schemes)
    if n_image == 1:
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    scale, shift = [1.0] * num_input_channels, [0.0] * num_input_channels
    for c, scheme in enumerate(normalization_schemes[:num_input_channels]):
        if scheme.split(".")[-1] in ZERO_TO_ONE_SCHEMES:
            m, s = mean[c % len(mean)], std[c % len(std)]
            scale[c], shift[c] = 1.0 / s, -m / s
    if scale == [1.0] * num_input_channels and shift == [0.0] * num_input_channels:
        return None
    return InputAffine(scale, shift, dim)
