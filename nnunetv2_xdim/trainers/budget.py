"""One way to set a training budget, for our trainers and nnU-Net's default alike.

nnU-Net hard-codes 1000 epochs x 250 iterations (+ 50 validation iterations) in its trainer. Short runs
and fair comparisons need the same budget for every arm without writing a trainer per budget, so every
XDim trainer, and `nnUNetTrainerXDimBaseline` (nnU-Net's default trainer, network and recipe unchanged),
read these environment variables when they are created:

    nnUNet_xdim_epochs            number of epochs               (nnU-Net default 1000)
    nnUNet_xdim_iterations        training iterations per epoch  (nnU-Net default 250)
    nnUNet_xdim_val_iterations    validation iterations per epoch (nnU-Net default 50)

The poly learning-rate schedule follows the epoch count, so a short budget is a complete (short) schedule.
"""
import os

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

BUDGET_ENV = {
    "num_epochs": "nnUNet_xdim_epochs",
    "num_iterations_per_epoch": "nnUNet_xdim_iterations",
    "num_val_iterations_per_epoch": "nnUNet_xdim_val_iterations",
}


def apply_budget(trainer: nnUNetTrainer) -> None:
    for attr, var in BUDGET_ENV.items():
        value = os.environ.get(var)
        if value is None or value.strip() == "":
            continue
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"environment variable {var}={value!r} must be a positive integer") from None
        if n < 1:
            raise ValueError(f"environment variable {var}={value!r} must be a positive integer")
        setattr(trainer, attr, n)
    if any(os.environ.get(v) for v in BUDGET_ENV.values()):
        trainer.print_to_log_file(
            f"Training budget from environment: {trainer.num_epochs} epochs x {trainer.num_iterations_per_epoch} "
            f"iterations (+{trainer.num_val_iterations_per_epoch} validation iterations per epoch)")
