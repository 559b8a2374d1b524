"""Applying the training budget (see nnunetv2_xdim/budget.py) to a trainer when it is created."""
from ..budget import read_budget

_ATTRIBUTES = {"epochs": "num_epochs", "iterations": "num_iterations_per_epoch",
               "val_iterations": "num_val_iterations_per_epoch"}


def apply_budget(trainer) -> None:
    budget = read_budget()
    for key, n in budget.items():
        setattr(trainer, _ATTRIBUTES[key], n)
    if budget:
        trainer.print_to_log_file(
            f"Training budget from environment: {trainer.num_epochs} epochs x {trainer.num_iterations_per_epoch} "
            f"iterations (+{trainer.num_val_iterations_per_epoch} validation iterations per epoch)")
