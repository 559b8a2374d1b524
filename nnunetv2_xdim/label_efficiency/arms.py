"""Arms of a label-efficiency study: a trainer on a plans, trained at some or all of the study's N."""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

DEFAULT_PLANS = "nnUNetPlans"
BASELINE = "nnUNetTrainerXDimBaseline"
# plans identifiers the study can make itself, and nnU-Net's planner for each
PLANNERS = {
    "nnUNetPlans": "ExperimentPlanner",
    "nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM",
    "nnUNetResEncUNetLPlans": "nnUNetPlannerResEncL",
    "nnUNetResEncUNetXLPlans": "nnUNetPlannerResEncXL",
}


class ArmError(Exception):
    pass


@dataclass(frozen=True)
class Arm:
    trainer: str
    plans: str = DEFAULT_PLANS           # the plans as named on the command line (before --target-spacing)
    sizes: Optional[Tuple[int, ...]] = None  # None: every N of the study

    @property
    def name(self) -> str:
        return self.trainer if self.plans == DEFAULT_PLANS else f"{self.trainer}:{self.plans}"

    def runs_at(self, n: int) -> bool:
        return self.sizes is None or n in self.sizes


def parse_arm(spec: str, default_plans: str = DEFAULT_PLANS) -> Arm:
    """TRAINER[:PLANS][@N,N,...] -> Arm."""
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z0-9_.\-]+))?(?:@([0-9,\s]+))?", spec.strip())
    if m is None:
        raise ArmError(f"arm {spec!r}: expected TRAINER[:PLANS][@N,N,...], e.g. "
                       f"nnUNetTrainerXDimBaseline:nnUNetResEncUNetMPlans@10,60")
    trainer, plans, sizes = m.group(1), m.group(2) or default_plans, m.group(3)
    if "__" in trainer or "__" in plans:
        raise ArmError(f"arm {spec!r}: nnU-Net's result folders cannot hold names with '__'")
    parsed = tuple(sorted({int(s) for s in sizes.split(",") if s.strip()})) if sizes else None
    return Arm(trainer, plans, parsed)


def arms_from_args(trainers: Sequence[str], arm_specs: Sequence[str], default_plans: str) -> List[Arm]:
    arms = [parse_arm(t, default_plans) for t in trainers] + [parse_arm(s, default_plans) for s in arm_specs]
    seen: Dict[Tuple[str, str], Arm] = {}
    for a in arms:
        if (a.trainer, a.plans) in seen:
            raise ArmError(f"arm {a.name} is given twice")
        seen[(a.trainer, a.plans)] = a
    if not arms:
        raise ArmError("no trainer given: name at least one with -tr (or --arm)")
    return arms


def twin_of(arm: Arm, arms: Sequence[Arm]) -> Optional[Arm]:
    """The pretrained/scratch twin of an XDim arm among `arms` (same plans), if the study has it."""
    if not arm.trainer.startswith("nnUNetTrainerXDim") or arm.trainer == BASELINE:
        return None
    other = arm.trainer[:-len("_Scratch")] if arm.trainer.endswith("_Scratch") else arm.trainer + "_Scratch"
    return next((a for a in arms if a.trainer == other and a.plans == arm.plans), None)


def check_trainers(arms: Sequence[Arm], budget_is_default: bool) -> None:
    """Every trainer must exist where nnU-Net looks (its tree and nnUNet_extTrainer), and honour the budget."""
    import contextlib
    import io

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from ..trainers import nnUNetTrainerXDim, nnUNetTrainerXDimBaseline

    for arm in arms:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its search
                cls = recursive_find_trainer_class_by_name(arm.trainer)
        except RuntimeError:  # nnU-Net's answer to an unknown name
            cls = None
        if cls is None:
            raise ArmError(f"unknown trainer {arm.trainer}: nnU-Net finds none of that name in its own trainers or "
                           f"in nnUNet_extTrainer (XDim trainers: nnUNetTrainerXDimEfficientNetLite0, ..._Scratch, "
                           f"..._SliceWise, ..._Stacked; nnU-Net's network: {BASELINE})")
        if not budget_is_default and not issubclass(cls, (nnUNetTrainerXDim, nnUNetTrainerXDimBaseline)):
            raise ArmError(f"trainer {arm.trainer} does not honour the training budget (nnUNet_xdim_* variables), "
                           f"so its arm would train longer than the others: for nnU-Net's network use {BASELINE}")
