"""Building blocks shared by the two 3D modes that keep the pretrained encoder two-dimensional.

- depth folded into the batch and back (`fold_depth` / `unfold_depth`);
- the in-plane view of a 3D plan, and the depth reduction the plan reaches at each stage;
- plan stages built the way nnU-Net builds them;
- `run_chunked`: a 2D module over many images in chunks, optionally with activation checkpointing, so that
  folding depth into the batch does not multiply the activation memory of training.
"""
import math
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Callable, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from .plan import PlanArch, check_full_resolution_first_stage


def fold_depth(x: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) -> (B*D, C, H, W); image b*D + d is slice d of sample b."""
    b, c, d, h, w = x.shape
    return x.transpose(1, 2).reshape(b * d, c, h, w)


def unfold_depth(y: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of `fold_depth`: (B*D, C, h, w) -> (B, C, D, h, w)."""
    n, c, h, w = y.shape
    return y.reshape(batch, n // batch, c, h, w).transpose(1, 2)


def depth_factors(plan: PlanArch) -> List[int]:
    """The depth reduction of each plan stage relative to the input (cumulative product of the z strides)."""
    factors, f = [], 1
    for s in plan.strides:
        f *= int(s[0])
        factors.append(f)
    return factors


def _planar_op(op):
    # the 2D counterpart of a 3D layer class (Conv3d -> Conv2d, InstanceNorm3d -> InstanceNorm2d, Dropout3d ...);
    # classes without a dimension (GroupNorm, LeakyReLU) stay as they are
    if op is None or "3d" not in op.__name__:
        return op
    planar = getattr(nn, op.__name__.replace("3d", "2d"), None)
    if planar is None:
        raise ValueError(f"no 2D counterpart of {op.__name__} in torch.nn for the in-plane part of a 3D plan")
    return planar


def in_plane_plan(plan: PlanArch) -> PlanArch:
    """The 2D plan a slice sees: in-plane strides and kernels of the 3D plan, same features and ops."""
    if plan.dim != 3:
        raise ValueError(f"expected a 3D plan, got a {plan.dim}D one")
    return replace(plan, dim=2, kernel_sizes=[tuple(k[1:]) for k in plan.kernel_sizes],
                   strides=[tuple(s[1:]) for s in plan.strides], norm_op=_planar_op(plan.norm_op),
                   dropout_op=_planar_op(plan.dropout_op))


def check_3d_plan(plan: PlanArch) -> None:
    if plan.dim != 3:
        raise ValueError(f"this 3D mode needs a 3D plan ('3d_fullres', '3d_lowres', '3d_cascade_fullres'), "
                         f"got a {plan.dim}D one")
    check_full_resolution_first_stage(plan)


def memory_options(extras: dict, default_chunk: int, default_checkpoint: bool) -> Tuple[int, bool]:
    """(chunk_2d, checkpoint_2d) from an architecture's extras: how many 2D images the 2D part processes at
    once (0: all), and whether its activations are recomputed in backward instead of stored."""
    chunk = extras.get("chunk_2d", default_chunk)
    use_checkpoint = extras.get("checkpoint_2d", default_checkpoint)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
        raise ValueError(f"extras['chunk_2d'] must be an integer >= 0 (0: all images at once), got {chunk!r}")
    if not isinstance(use_checkpoint, bool):
        raise ValueError(f"extras['checkpoint_2d'] must be true or false, got {use_checkpoint!r}")
    return chunk, use_checkpoint


@contextmanager
def running_stats_frozen(module: nn.Module):
    """BatchNorm layers in `module` normalise with batch statistics but leave their running statistics alone.

    Activation checkpointing runs a chunk twice (forward, then again in backward); the second run must not
    count the same batch a second time in the running averages.
    """
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch statistic
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def run_chunked(fn: Callable[[torch.Tensor], Sequence[torch.Tensor]], x: torch.Tensor, chunk: int,
                use_checkpoint: bool, owner: nn.Module) -> List[torch.Tensor]:
    """`fn(x)` (a list of per-image tensors) computed on at most `chunk` images of `x` at a time.

    Chunks interleave the images (chunk k holds images k, k + n_chunks, ...), so that with depth folded into
    the batch each chunk spans the whole patch depth and every sample: BatchNorm statistics of a chunk stay
    close to those of the whole batch. With `use_checkpoint` and gradients enabled, each chunk's activations
    are recomputed in backward instead of stored; only `fn`'s outputs stay in memory. `owner` is the module
    whose BatchNorm running statistics the recomputation must not update again. chunk <= 0: all at once.
    """
    n = x.shape[0]
    n_chunks = 1 if chunk <= 0 else math.ceil(n / chunk)
    checkpointed = use_checkpoint and torch.is_grad_enabled()

    def run(part):
        if not checkpointed:
            return list(fn(part))
        # torch.compile rejects a custom context_fn; its compiled recomputation updates running statistics once
        context = None if torch.compiler.is_compiling() else (lambda: (nullcontext(), running_stats_frozen(owner)))
        kw = {"context_fn": context} if context is not None else {}
        return list(checkpoint(fn, part, use_reentrant=False, **kw))

    if n_chunks == 1:
        return run(x)
    chunks = [torch.arange(k, n, n_chunks, device=x.device) for k in range(n_chunks)]
    outputs = [run(x.index_select(0, idx)) for idx in chunks]
    inverse = torch.argsort(torch.cat(chunks))
    return [torch.cat(level).index_select(0, inverse) for level in zip(*outputs)]
