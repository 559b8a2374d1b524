"""Multi-GPU correctness without GPUs: DDP (gloo, 2 CPU processes) equals one process on the whole batch for
per-sample normalisations, and nnU-Net's SyncBatchNorm conversion reaches every BatchNorm of our networks
without dropping timm's fused activations."""
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nnunetv2_xdim.networks.plan import XDimArch
from nnunetv2_xdim.networks.unet import build_network
from nnunetv2_xdim.trainers.ddp import activation_preserving_sync_batchnorm
from plans_util import plan_arch

PLAN = dict(patch_size=(32, 32), strides=[(1, 1), (2, 2), (2, 2), (2, 2)])


def _net(backbone, norm, deep_supervision=False):
    torch.manual_seed(0)
    return build_network(XDimArch(backbone=backbone, encoder_norm=norm), plan_arch(**PLAN), 2, 3, deep_supervision)


def _loss(outputs):
    # nnU-Net trains with deep supervision on, so every head gets gradients (DDP needs all parameters used)
    return sum(o.square().mean() for o in outputs)


def _worker(rank, world, init_file, backbone, norm, batch, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    net = nn.parallel.DistributedDataParallel(_net(backbone, norm, True).train())
    half = batch.shape[0] // world
    _loss(net(batch[rank * half:(rank + 1) * half])).backward()
    if rank == 0:
        torch.save({k: p.grad for k, p in net.module.named_parameters() if p.grad is not None}, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("backbone,norm", [("resnet18", "instance"), ("tf_efficientnet_lite0", "frozen"),
                                           ("resnet18", "group")])
def test_ddp_gradients_equal_single_process_on_the_whole_batch(backbone, norm, tmp_path):
    torch.manual_seed(1)
    batch = torch.randn(4, 2, 32, 32)
    out = str(tmp_path / "grads.pt")
    init_file = tempfile.mktemp(dir=tmp_path)
    mp.spawn(_worker, args=(2, init_file, backbone, norm, batch, out), nprocs=2, join=True)
    ddp_grads = torch.load(out)
    single = _net(backbone, norm, True).train()
    _loss(single(batch)).backward()
    for k, p in single.named_parameters():
        if p.grad is None:
            continue
        assert torch.allclose(ddp_grads[k], p.grad, rtol=1e-4, atol=1e-6), k


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "resnet18", "regnety_002"])
def test_sync_batchnorm_conversion_reaches_every_batchnorm_and_keeps_activations(backbone):
    net = _net(backbone, "batch").eval()
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        ref = net(x)
    with activation_preserving_sync_batchnorm():
        converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_net(backbone, "batch")).eval()
    bns = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, nn.SyncBatchNorm) for m in bns)
    with torch.no_grad():
        assert torch.allclose(converted(x), ref, atol=1e-5)  # same function: no activation lost
    # the converter is restored afterwards
    plain = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_net(backbone, "batch")).eval()
    if backbone != "resnet18":  # timm fuses BN+act only in these families; torch's converter drops the act
        with torch.no_grad():
            assert not torch.allclose(plain(x), ref, atol=1e-5)
