"""Run nnU-Net's own commands (as a user would, in subprocesses) on generated datasets."""
import multiprocessing
import os
import subprocess
import sys
import types
from typing import Dict, List

import pytest

from nnunetv2_xdim.discovery import enable_trainer_discovery


def nnunet_env(root: str, epochs: int = 1, iterations: int = 2, val_iterations: int = 1) -> Dict[str, str]:
    env = dict(os.environ)
    for k in ("raw", "preprocessed", "results"):
        os.makedirs(os.path.join(root, k), exist_ok=True)
    env.update(nnUNet_raw=os.path.join(root, "raw"), nnUNet_preprocessed=os.path.join(root, "preprocessed"),
               nnUNet_results=os.path.join(root, "results"), HF_HUB_OFFLINE="1", nnUNet_def_n_proc="1",
               nnUNet_compile="f", nnUNet_xdim_epochs=str(epochs), nnUNet_xdim_iterations=str(iterations),
               nnUNet_xdim_val_iterations=str(val_iterations))
    env.pop("nnUNet_n_proc_DA", None)  # nnU-Net 2.8.1's planner crashes with 0
    enable_trainer_discovery(env)
    return env


def run(cmd: List[str], env: Dict[str, str], timeout: int = 900, **kw) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with the tail of its output, so a failing test says why."""
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-6000:]}")
    return p


def plan_and_preprocess(dataset_id: int, env, configurations=("2d",), extra=()):
    return run(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", *configurations, "-np", "1",
                *extra], env)


def train(dataset_id: int, configuration: str, fold, trainer: str, env, extra=()):
    # in-process augmentation: worker start-up costs more than a few tiny iterations on 2 cores
    env = dict(env, nnUNet_n_proc_DA="0")
    return run(["nnUNetv2_train", str(dataset_id), configuration, str(fold), "-tr", trainer, "-device", "cpu",
                *extra], env)


def predict(input_folder: str, output_folder: str, dataset_id: int, configuration: str, trainer: str, env,
            folds=("0",), extra=()):
    return run(["nnUNetv2_predict", "-i", input_folder, "-o", output_folder, "-d", str(dataset_id), "-c",
                configuration, "-tr", trainer, "-f", *folds, "-device", "cpu", "-npp", "1", "-nps", "1",
                "--disable_progress_bar", *extra], env)


PYTHON = sys.executable


class _SerialPool:
    """Stands in for nnU-Net's spawn pool: each spawned worker would import torch again (seconds each)."""

    def __init__(self, *_):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False

    def starmap(self, func, args):
        return [func(*a) for a in args]


def nnunet_verify(dataset: str, monkeypatch) -> None:
    """nnU-Net's own dataset integrity check (what nnUNetv2_plan_and_preprocess --verify_dataset_integrity runs),
    in this process with its worker pool run serially."""
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    monkeypatch.setattr(multiprocessing, "get_context", lambda *_: types.SimpleNamespace(Pool=_SerialPool))
    verify.verify_dataset_integrity(dataset, 1)
