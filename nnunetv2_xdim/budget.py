"""The training budget, one way for our trainers and nnU-Net's default alike.

nnU-Net hard-codes 1000 epochs x 250 iterations (+ 50 validation iterations) in its trainer. Short runs
and fair comparisons need the same budget for every arm without writing a trainer per budget, so every
XDim trainer, and `nnUNetTrainerXDimBaseline` (nnU-Net's default trainer, network and recipe unchanged),
read these environment variables when they are created:

    nnUNet_xdim_epochs            number of epochs               (nnU-Net default 1000)
    nnUNet_xdim_iterations        training iterations per epoch  (nnU-Net default 250)
    nnUNet_xdim_val_iterations    validation iterations per epoch (nnU-Net default 50)

The poly learning-rate schedule follows the epoch count, so a short budget is a complete (short) schedule.
This module is light (no torch): the commands that set the variables import it too.
"""
import os
from typing import Dict, Mapping, Optional

BUDGET_VARS = {"epochs": "nnUNet_xdim_epochs", "iterations": "nnUNet_xdim_iterations",
               "val_iterations": "nnUNet_xdim_val_iterations"}
NNUNET_BUDGET = {"epochs": 1000, "iterations": 250, "val_iterations": 50}


def read_budget(environ: Optional[Mapping[str, str]] = None) -> Dict[str, int]:
    """The budget values the environment sets (only those it sets), checked."""
    environ = os.environ if environ is None else environ
    budget = {}
    for key, var in BUDGET_VARS.items():
        value = environ.get(var)
        if value is None or value.strip() == "":
            continue
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"environment variable {var}={value!r} must be a positive integer")
        budget[key] = n
    return budget
