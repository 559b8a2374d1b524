"""Multi-GPU (nnU-Net's `-num_gpus`, DistributedDataParallel) with timm backbones.

nnU-Net converts BatchNorm layers to SyncBatchNorm with `torch.nn.SyncBatchNorm.convert_sync_batchnorm`. timm
fuses BatchNorm and activation into one module (`BatchNormAct2d`: EfficientNet, RegNet, ...); torch's converter
turns it into a plain SyncBatchNorm and so silently drops the activation. timm's own converter keeps it
(`SyncBatchNormAct`). We swap the converter in for the duration of nnU-Net's `initialize()` only.
The conversion must also be idempotent: UNetDecoder registers the encoder a second time (`decoder.encoder`),
and a second pass would turn SyncBatchNormAct (a SyncBatchNorm, not a BatchNormAct2d) into a plain one.
"""
from contextlib import contextmanager

import torch
from timm.layers import convert_sync_batchnorm as timm_convert_sync_batchnorm
from torch import nn


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """BatchNorm -> SyncBatchNorm (timm's fused BatchNormAct2d -> SyncBatchNormAct), each module once."""
    if isinstance(module, nn.SyncBatchNorm):
        return module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return timm_convert_sync_batchnorm(module, process_group)
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child, process_group)
        if new is not child:
            module.add_module(name, new)
    return module


@contextmanager
def activation_preserving_sync_batchnorm():
    original = torch.nn.SyncBatchNorm.__dict__["convert_sync_batchnorm"]
    torch.nn.SyncBatchNorm.convert_sync_batchnorm = classmethod(
        lambda cls, module, process_group=None: convert_sync_batchnorm(module, process_group))
    try:
        yield
    finally:
        torch.nn.SyncBatchNorm.convert_sync_batchnorm = original
