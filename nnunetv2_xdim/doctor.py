"""`nnunetv2_xdim_check`: is this machine set up to train and predict with XDim trainers? Says what to fix."""
import argparse
import os
import subprocess
import sys

from . import discovery


def _nnunet_version():
    from importlib.metadata import version
    return version("nnunetv2")


def _lookup_works(trainer: str) -> str:
    """Ask nnU-Net itself, in a fresh process with this environment, to find a trainer by name."""
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f;"
            f"print('FOUND', f('{trainer}').__module__)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    found = [l for l in p.stdout.splitlines() if l.startswith("FOUND ")]
    return found[0][6:] if p.returncode == 0 and found else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Check nnU-Net version, trainer discovery and ImageNet weight "
                                                 "sources for nnunetv2-xdim, and say what to fix.")
    parser.parse_args(argv)
    from .backbones.weights import ENV_WEIGHTS, hf_cache_dir, hf_offline, local_source
    from .trainers import BACKBONE_TRAINERS
    problems = 0

    def report(ok, what, fix=""):
        nonlocal problems
        problems += 0 if ok else 1
        print(f"[{'ok' if ok else 'FIX'}] {what}" + (f"\n      -> {fix}" if fix and not ok else ""))

    v = _nnunet_version()
    major_minor = tuple(int(x) for x in v.split(".")[:2])
    report((2, 8) <= major_minor < (2, 9), f"nnunetv2 {v} (needs >=2.8.0,<2.9 for nnUNet_extTrainer)",
           'pip install "nnunetv2>=2.8.0,<2.9"')
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        report(bool(os.environ.get(var)), f"{var}={os.environ.get(var, '')}",
               f"export {var}=/path/to/folder (see nnU-Net's documentation on paths)")
    enabled = discovery.is_enabled()
    report(enabled, f"nnUNet_extTrainer contains {discovery.ext_trainer_folder()}",
           f"{discovery.export_line()}   (add it to ~/.bashrc; needed to train AND to predict)")
    if enabled:
        module = _lookup_works("nnUNetTrainerXDimResNet")
        report(module.startswith("nnunetv2_xdim"), f"nnU-Net finds nnUNetTrainerXDimResNet ({module or 'not found'})",
               "another folder in nnUNet_extTrainer may shadow ours, or the package is not importable")
    print(f"\nImageNet weights (HF_HUB_OFFLINE={'1' if hf_offline() else 'unset'}, cache {hf_cache_dir()}, "
          f"{ENV_WEIGHTS}={os.environ.get(ENV_WEIGHTS, '')}):")
    for t in BACKBONE_TRAINERS:
        src = local_source(t.backbone)
        if src is None:
            src = "not on this machine: " + ("downloaded from the Hugging Face hub at the first training"
                                             if not hf_offline() else "offline, so training it would fail")
        print(f"  {t.__name__:<40} {t.backbone:<24} {src}")
    print("\n" + ("All set." if problems == 0 else f"{problems} thing(s) to fix, see above."))
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
