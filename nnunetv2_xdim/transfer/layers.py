"""3D layers that take the place of timm's 2D ones and keep their parameter names.

Each class is a subclass of the 2D (or generic) layer it replaces, so the state-dict keys stay the same and
timm's own type checks (e.g. `isinstance(m, BatchNormAct2d)` in norm conversions) keep working.
"""
import math

import torch
import torch.nn.functional as F
from timm.layers.norm_act import BatchNormAct2d
from timm.layers.squeeze_excite import SEModule
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import nn


def _spatial_dims(x: torch.Tensor):
    return tuple(range(2, x.dim()))


class Conv3dSame(nn.Conv3d):
    """TensorFlow 'SAME' padding in 3D (timm's Conv2dSame, one axis more): output = ceil(input / stride).

    The padding depends on the input size, so it is computed at run time; the name ends in 'Same' so that
    `set_stride` knows not to touch the padding.
    """

    def forward(self, x):
        pads = []
        for n, k, s, d in reversed(list(zip(x.shape[2:], self.kernel_size, self.stride, self.dilation))):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads += [total // 2, total - total // 2]
        return F.conv3d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class BatchNormActNd(BatchNormAct2d):
    """timm's BatchNormAct2d for 4D and 5D inputs (the 2D class asserts 4D)."""

    def _check_input_dim(self, x):
        if x.dim() not in (4, 5):
            raise ValueError(f"expected a 4D or 5D input, got {x.dim()}D")

    def forward(self, x):
        x = nn.modules.batchnorm._BatchNorm.forward(self, x)
        return self.act(self.drop(x))


class SqueezeExciteNd(SqueezeExcite):
    """EfficientNet/MobileNet squeeze-excitation that pools over every spatial axis, depth included.

    timm's version averages over dims (2, 3): on a 5D tensor that is (depth, height), leaving width, and
    the block still runs, silently wrong.
    """

    def forward(self, x):
        x_se = x.mean(_spatial_dims(x), keepdim=True)
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return x * self.gate(x_se)


class SEModuleNd(SEModule):
    """SE-ResNet / RegNetY squeeze-excitation pooling over every spatial axis (see SqueezeExciteNd)."""

    def forward(self, x):
        dims = _spatial_dims(x)
        x_se = x.mean(dims, keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax(dims, keepdim=True)
        x_se = self.fc2(self.act(self.bn(self.fc1(x_se))))
        return x * self.gate(x_se)
