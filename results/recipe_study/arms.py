"""The arms of the recipe study, each declared once: its trainer and the two arms its report compares it with.

The one-factor trainers live in trainers/nnunetv2_xdim_recipe_trainers.py (their docstrings say what each
changes); the study adds that folder to nnUNet_extTrainer next to the package's own.
"""
import os
from dataclasses import dataclass
from typing import Optional

from nnunetv2_xdim.discovery import enable_trainer_discovery

TRAINERS_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers")


@dataclass(frozen=True)
class Arm:
    name: str
    trainer: str
    # the scratch arm that differs from this one in its initialisation only (None: no ImageNet start to compare)
    twin: Optional[str] = "scratch"
    # the arm this one changes in one factor, the report's 'vs current recipe' (None: a reference arm)
    base: Optional[str] = "pretrained"


def _scratch(name: str, trainer: str, base: Optional[str] = "scratch") -> Arm:
    return Arm(name, trainer, twin=None, base=base)


def _adamw(name: str, trainer: str, twin: str = "adamw_scratch", base: str = "adamw") -> Arm:
    return Arm(name, trainer, twin, base)


_ARMS = [
    # the reference arms: EfficientNet-Lite0 with nnU-Net's SGD, its scratch twin, and nnU-Net's default
    Arm("pretrained", "nnUNetTrainerXDimLite0R_SGD", base=None),
    _scratch("scratch", "nnUNetTrainerXDimLite0R_SGD_Scratch", base=None),
    Arm("default", "nnUNetTrainerXDimBaseline", twin=None, base=None),
    # one factor of `pretrained`
    Arm("enc_lr_1", "nnUNetTrainerXDimLite0R_EncLR1"),
    Arm("enc_lr_0.3", "nnUNetTrainerXDimLite0R_EncLR03"),
    Arm("no_warmup", "nnUNetTrainerXDimLite0R_NoWarmup"),
    Arm("warmup_25", "nnUNetTrainerXDimLite0R_Warmup25"),
    Arm("freeze_10", "nnUNetTrainerXDimLite0R_Freeze10"),
    Arm("frozen_encoder", "nnUNetTrainerXDimLite0R_FrozenEncoder"),
    Arm("frozen_random_encoder", "nnUNetTrainerXDimLite0R_FrozenRandomEncoder", base="frozen_encoder"),
    Arm("adamw", "nnUNetTrainerXDimLite0R_AdamW", twin="adamw_scratch"),
    _scratch("adamw_scratch", "nnUNetTrainerXDimLite0R_AdamW_Scratch"),
    Arm("norm_frozen", "nnUNetTrainerXDimLite0R_NormFrozen"),
    Arm("norm_instance", "nnUNetTrainerXDimLite0R_NormInstance"),
    Arm("norm_batch3d", "nnUNetTrainerXDimLite0R_NormBatch3D"),
    Arm("grey_stem", "nnUNetTrainerXDimLite0R_GreyStem"),
    Arm("imagenet_range", "nnUNetTrainerXDimLite0R_ImageNetRange"),
    # one factor of `adamw`
    _adamw("adamw_enc_lr_1", "nnUNetTrainerXDimLite0R_AdamWEncLR1"),
    _adamw("adamw_instance", "nnUNetTrainerXDimLite0R_AdamWInstance", twin="adamw_instance_scratch"),
    _scratch("adamw_instance_scratch", "nnUNetTrainerXDimLite0R_AdamWInstance_Scratch", base="adamw_scratch"),
    _adamw("adamw_batch3d", "nnUNetTrainerXDimLite0R_AdamWBatch3D", twin="adamw_batch3d_scratch"),
    _scratch("adamw_batch3d_scratch", "nnUNetTrainerXDimLite0R_AdamWBatch3D_Scratch", base="adamw_scratch"),
    _adamw("adamw_freeze_10", "nnUNetTrainerXDimLite0R_AdamWFreeze10"),
    _adamw("adamw_imagenet_range", "nnUNetTrainerXDimLite0R_AdamWImageNetRange"),
    _adamw("adamw_fullres_stem", "nnUNetTrainerXDimLite0R_AdamWFullResStem"),
    _adamw("adamw_fullres_stem_imagenet_range", "nnUNetTrainerXDimLite0R_AdamWFullResStemImageNetRange",
           base="adamw_fullres_stem"),
    _adamw("adamw_l2sp", "nnUNetTrainerXDimLite0R_AdamWL2SP"),
    _adamw("adamw_l2sp_1000", "nnUNetTrainerXDimLite0R_AdamWL2SP1000"),
    _adamw("adamw_l2sp_30", "nnUNetTrainerXDimLite0R_AdamWL2SP30"),
    _adamw("adamw_l2sp_300", "nnUNetTrainerXDimLite0R_AdamWL2SP300"),
    # 3D by the slice-wise and the stacked mode instead of inflation (3d_fullres only: in 2d they are `adamw`)
    _adamw("slicewise_adamw", "nnUNetTrainerXDimLite0R_SliceWiseAdamW", twin="slicewise_adamw_scratch"),
    _scratch("slicewise_adamw_scratch", "nnUNetTrainerXDimLite0R_SliceWiseAdamW_Scratch", base="adamw_scratch"),
    _adamw("slicewise_adamw_enc_lr_1", "nnUNetTrainerXDimLite0R_SliceWiseAdamWEncLR1",
           twin="slicewise_adamw_scratch", base="slicewise_adamw"),
    _adamw("slicewise_adamw_fullres_stem", "nnUNetTrainerXDimLite0R_SliceWiseAdamWFullResStem",
           twin="slicewise_adamw_scratch", base="slicewise_adamw"),
    _adamw("stacked_adamw", "nnUNetTrainerXDimLite0R_StackedAdamW", twin="stacked_adamw_scratch"),
    _scratch("stacked_adamw_scratch", "nnUNetTrainerXDimLite0R_StackedAdamW_Scratch", base="adamw_scratch"),
    _adamw("stacked_adamw_fullres_stem", "nnUNetTrainerXDimLite0R_StackedAdamWFullResStem",
           twin="stacked_adamw_scratch", base="stacked_adamw"),
    # more factors of `pretrained`
    Arm("transfuse_1", "nnUNetTrainerXDimLite0R_Transfuse1"),
    Arm("transfuse_2", "nnUNetTrainerXDimLite0R_Transfuse2"),
    Arm("transfuse_3", "nnUNetTrainerXDimLite0R_Transfuse3"),
    Arm("fullres_stem", "nnUNetTrainerXDimLite0R_FullResStem"),
    # other ImageNet weights
    Arm("lite1", "nnUNetTrainerXDimLite1R_SGD", twin="lite1_scratch"),
    _scratch("lite1_scratch", "nnUNetTrainerXDimLite1R_SGD_Scratch"),
    Arm("lite2", "nnUNetTrainerXDimLite2R_SGD", twin="lite2_scratch"),
    _scratch("lite2_scratch", "nnUNetTrainerXDimLite2R_SGD_Scratch"),
    _adamw("lite2_adamw", "nnUNetTrainerXDimLite2R_AdamW", twin="lite2_adamw_scratch"),
    _scratch("lite2_adamw_scratch", "nnUNetTrainerXDimLite2R_AdamW_Scratch", base="adamw_scratch"),
]
ARMS = {arm.name: arm for arm in _ARMS}  # in the order the reports list them
REFERENCE_ARMS = ("pretrained", "scratch", "default")  # drawn bold in the curves


def add_study_trainers(env: dict) -> dict:
    """Let nnU-Net's trainer lookup in the commands run with `env` find the package's trainers and the study's
    one-factor arms."""
    enable_trainer_discovery(env)
    env["nnUNet_extTrainer"] += os.pathsep + TRAINERS_FOLDER
    return env
