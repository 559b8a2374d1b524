"""What one protocol run is set up with: its settings (from the command line), the environment every command
gets, and the error for a failed step or a wrong setup."""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..budget import BUDGET_VARS
from ..discovery import enable_trainer_discovery
from .challenges import Challenge, DatasetSpec

PLANS = "nnUNetPlans"
DEFAULT_FOLDS = (0, 1, 2, 3, 4)
TINY_BUDGET = {"epochs": 1, "iterations": 2, "val_iterations": 1}
NNUNET_FOLDERS = ("raw", "preprocessed", "results")


class ProtocolError(Exception):
    """A step failed or the setup is wrong; the message says which and how to fix it."""


@dataclass
class Settings:
    challenge: Challenge
    inputs: List[str]
    output: str
    folds: List[int]
    split_folds: int
    trainers: List[str]
    custom_trainers: bool
    stand_in: Optional[str]
    tiny: bool
    budget: Dict[str, int]
    device: Optional[str]
    num_processes: int
    predict_processes: Optional[int]  # None: nnUNetv2_predict's own defaults (3 + 3)
    overwrite: bool
    dry_run: bool
    datasets: List[DatasetSpec]
    converter_extra: List[str]


def environment(s: Settings) -> Dict[str, str]:
    """The full environment of every command: the caller's, with trainer discovery and the budget."""
    env = dict(os.environ)
    enable_trainer_discovery(env)  # nnU-Net finds our trainers in training and prediction
    for key, value in s.budget.items():
        env[BUDGET_VARS[key]] = str(value)
    if s.tiny:
        env.setdefault("nnUNet_def_n_proc", "1")  # export workers: each one costs seconds to start on CPU
        env.setdefault("nnUNet_compile", "f")
    return env


def protocol_env(s: Settings, env: Dict[str, str]) -> Dict[str, str]:
    """The variables the protocol sets for every command (printed and written to commands.sh)."""
    keys = ["nnUNet_extTrainer"] + [BUDGET_VARS[k] for k in s.budget]
    if s.tiny:
        keys += ["nnUNet_def_n_proc", "nnUNet_compile"]
    return {k: env[k] for k in keys}


def train_env(s: Settings) -> Dict[str, str]:
    """What training sets on top: in-process augmentation for tiny runs, where on a few CPU cores worker start-up
    costs more than the runs themselves."""
    return {"nnUNet_n_proc_DA": "0"} if s.tiny else {}


def nnunet_paths(s: Settings, env: Dict[str, str]) -> Dict[str, str]:
    """nnU-Net's three folders; a dry run without them prints the variables, not invented paths."""
    paths = {k: env.get(f"nnUNet_{k}") for k in NNUNET_FOLDERS}
    if s.dry_run:
        return {k: v or f"$nnUNet_{k}" for k, v in paths.items()}
    missing = [f"nnUNet_{k}" for k, v in paths.items() if not v]
    if missing:
        raise ProtocolError(f"{', '.join(missing)} not set: export nnUNet_raw, nnUNet_preprocessed and "
                            f"nnUNet_results (nnU-Net's folders) before running the protocol")
    return paths
