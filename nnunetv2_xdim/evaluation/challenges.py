"""Challenge presets: which structures are evaluated, how cases are grouped, and the empty-mask convention.

Label codes follow the challenges' own releases (see documentation/challenges.md):
- CAMUS: 1 LV cavity (endocardium), 2 LV myocardium, 3 left atrium. CAMUS reports the endocardium, the
  epicardium (cavity plus myocardium) and the atrium; the myocardium alone is added because it is what the network
  predicts. Cases are grouped by view (2CH/4CH) and instant (ED/ES), read from the case name.
- BraTS: regions whole tumour (WT), tumour core (TC), enhancing tumour (ET), whose labels depend on the files:
  nnU-Net's (1 oedema, 2 necrosis/non-enhancing core, 3 enhancing: our brats2022 converter and nnU-Net's
  Dataset137, hence in labelsTr, gt_segmentations and predictions), BraTS 2021/2022 releases and exported
  submissions (1 necrosis, 2 oedema, 4 enhancing), BraTS 2023+ (1 necrosis, 2 oedema, 3 enhancing).
- CHAOS: liver, right kidney, left kidney, spleen as 1, 2, 3, 4 (the order of the MR ground-truth grey values
  63/126/189/252, as our chaos converter writes them; CT annotates the liver only). Cases are grouped by
  modality (CT/MR) from the case name (CT_<id>, MR_<id>_T1in, ...).
- generic: any labels or regions given on the command line or read from an nnU-Net dataset.json.
"""
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Optional, Tuple

from nnunetv2_xdim.evaluation.errors import EvaluationError
from nnunetv2_xdim.evaluation.metrics import EmptyConvention


@dataclass(frozen=True)
class Structure:
    """A named structure: the union of one or more label values (a region in nnU-Net's terms)."""
    name: str
    labels: Tuple[int, ...]


@dataclass(frozen=True)
class LabelCheck:
    """The label values that reference and prediction files may hold, and what to say when they hold others.

    A label outside the convention is never scored silently: it means the files follow another convention (a
    BraTS 2021 file read with nnU-Net's labels, a prediction of another dataset), and every structure built
    from the missing label would score Dice 0 in every case.
    """
    known: FrozenSet[int]
    convention: str            # the convention assumed, as the message names it
    remedy: str                # the option that fixes a mismatch
    strict: bool = True        # False: predictions are only warned about, references not checked (--labels)


@dataclass(frozen=True)
class Preset:
    name: str
    structures: Tuple[Structure, ...]
    convention: EmptyConvention
    convention_text: str
    # Label values references and predictions may hold; None skips the check.
    label_check: Optional[LabelCheck] = None
    group_columns: Tuple[str, ...] = ()
    grouper: Optional[Callable[[str], Dict[str, str]]] = None
    # Challenge names of our metrics, shown next to ours in reports.
    aliases: Dict[str, str] = field(default_factory=dict)

    def groups(self, case_id: str) -> Dict[str, str]:
        return self.grouper(case_id) if self.grouper else {}

    def with_structures(self, structures: Tuple[Structure, ...], label_check: Optional[LabelCheck]) -> "Preset":
        """The same challenge with user-defined labels, checked by label_check instead of the preset's labels."""
        return Preset(self.name, structures, self.convention, self.convention_text, label_check,
                      self.group_columns, self.grouper, self.aliases)


def _token(pattern: str) -> "re.Pattern":
    # A token is delimited by anything but letters and digits, so "patient0001_2CH_ED" yields 2CH and ED.
    return re.compile(rf"(?<![A-Za-z0-9])({pattern})(?![A-Za-z0-9])", re.IGNORECASE)


_CAMUS_VIEW = _token("2CH|4CH")
_CAMUS_INSTANT = _token("ED|ES")
# Extra training frames of the 2023 half sequences, named patientNNNN_2CH_half<t> by our CAMUS converter.
_CAMUS_HALF = _token(r"half\d*")
_CHAOS_CT = re.compile(r"(?<![A-Za-z])CT(?![A-Za-z])", re.IGNORECASE)
_CHAOS_MR = re.compile(r"(?<![A-Za-z])(MRI?(?![A-Za-z])|T1|T2)", re.IGNORECASE)


def camus_groups(case_id: str) -> Dict[str, str]:
    view = _CAMUS_VIEW.search(case_id)
    instant = _CAMUS_INSTANT.search(case_id)
    if instant:
        instant_name = instant.group(1).upper()
    else:
        instant_name = "half-sequence" if _CAMUS_HALF.search(case_id) else "unknown"
    return {"view": view.group(1).upper() if view else "unknown", "instant": instant_name}


def camus_patient(case_id: str) -> str:
    """The case name without its view and instant tokens: 'patient0001_2CH_ED' -> 'patient0001'."""
    stripped = _CAMUS_HALF.sub("", _CAMUS_INSTANT.sub("", _CAMUS_VIEW.sub("", case_id)))
    return re.sub(r"[_\-. ]+", "_", stripped).strip("_")


def chaos_groups(case_id: str) -> Dict[str, str]:
    if _CHAOS_CT.search(case_id):
        return {"modality": "CT"}
    if _CHAOS_MR.search(case_id):
        return {"modality": "MR"}
    return {"modality": "unknown"}


CAMUS = Preset(
    name="camus",
    structures=(Structure("LV_endo", (1,)), Structure("LV_myo", (2,)), Structure("LV_epi", (1, 2)),
                Structure("LA", (3,))),
    convention=EmptyConvention(both_empty_is_perfect=False),
    convention_text="A structure absent from both reference and prediction is undefined (NaN, not averaged; "
                    "CAMUS references always contain all three). A structure present in only one of them gets "
                    "Dice 0 and the image diagonal as HD/HD95/MAD.",
    label_check=LabelCheck(frozenset({0, 1, 2, 3}), "CAMUS labels (1 LV cavity, 2 LV myocardium, 3 left atrium)",
                           "to evaluate other labels, give --labels or --dataset-json"),
    group_columns=("view", "instant"),
    grouper=camus_groups,
    aliases={"assd": "MAD"},
)

CHAOS = Preset(
    name="chaos",
    structures=(Structure("liver", (1,)), Structure("right_kidney", (2,)), Structure("left_kidney", (3,)),
                Structure("spleen", (4,))),
    convention=EmptyConvention(both_empty_is_perfect=False, ignore_empty_reference=True,
                               outside_is_background=False),
    convention_text="An organ absent from the reference is not evaluated (NaN), whatever the prediction: CHAOS "
                    "CT annotates the liver only. A missed organ gets Dice 0, RAVD 100 %, the image diagonal as "
                    "ASSD/MSSD and 0 CHAOS points. As in the CHAOS evaluation code, the image border is not "
                    "surface where an organ is cut by the field of view.",
    label_check=LabelCheck(frozenset({0, 1, 2, 3, 4}),
                           "CHAOS labels as our chaos converter writes them (1 liver, 2 right kidney, 3 left "
                           "kidney, 4 spleen)",
                           "evaluate label files in that convention (an exported submission's grey values "
                           "63/126/189/252 are not), or give --labels or --dataset-json for other labels"),
    group_columns=("modality",),
    grouper=chaos_groups,
    aliases={"hd": "MSSD", "assd": "ASSD"},
)

BRATS_LABELS = {
    # name: (WT, TC, ET, label values the files may hold)
    "2021": ((1, 2, 4), (1, 4), (4,), frozenset({0, 1, 2, 4})),
    "2023": ((1, 2, 3), (1, 3), (3,), frozenset({0, 1, 2, 3})),
    "nnunet": ((1, 2, 3), (2, 3), (3,), frozenset({0, 1, 2, 3})),
}
_BRATS_MEANING = {"2021": "1 necrosis, 2 oedema, 4 enhancing", "2023": "1 necrosis, 2 oedema, 3 enhancing",
                  "nnunet": "1 oedema, 2 necrosis, 3 enhancing"}


def brats(label_convention: str) -> Preset:
    if label_convention not in BRATS_LABELS:
        raise EvaluationError(f"unknown BraTS label convention {label_convention!r}, expected one of "
                         f"{sorted(BRATS_LABELS)}")
    wt, tc, et, known = BRATS_LABELS[label_convention]
    return Preset(
        name=f"brats ({label_convention} labels)",
        structures=(Structure("WT", wt), Structure("TC", tc), Structure("ET", et)),
        convention=EmptyConvention(both_empty_is_perfect=True),
        convention_text="As in BraTS: a region absent from both reference and prediction is a perfect match "
                        "(Dice 1, distances 0); a region present in only one gets Dice 0 and the image diagonal "
                        "as HD/HD95 (373.13 mm for 240x240x155 at 1 mm).",
        label_check=LabelCheck(
            known, f"BraTS {label_convention} labels ({_BRATS_MEANING[label_convention]})",
            "--brats-labels sets the convention of references and predictions (nnunet: labelsTr and nnU-Net "
            "predictions; 2021: BraTS 2021/2022 releases and exported submissions; 2023); references and "
            "predictions in different conventions must be brought to one first (nnunetv2_xdim_export_brats2022 "
            "writes nnU-Net predictions in the BraTS labels)"),
    )


def generic(structures: Tuple[Structure, ...], label_check: Optional[LabelCheck] = None) -> Preset:
    return Preset(
        name="generic",
        structures=structures,
        convention=EmptyConvention(both_empty_is_perfect=False),
        convention_text="As in nnU-Net's own summary: a structure absent from both reference and prediction is "
                        "undefined (NaN, not averaged). A structure present in only one gets Dice 0 and the image "
                        "diagonal as distances.",
        label_check=label_check,
    )


def parse_label_spec(spec: str) -> Tuple[Structure, ...]:
    """Structures from 'LV=1;epi=1,2;LA=3' (named) or '1,2,3' (one structure per label, named by it)."""
    structures = []
    if "=" in spec:
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            name, _, values = part.partition("=")
            structures.append(Structure(name.strip(), _parse_ints(values, spec)))
    else:
        structures = [Structure(str(v), (v,)) for v in _parse_ints(spec, spec)]
    if not structures:
        raise EvaluationError(f"no labels in {spec!r}; expected e.g. '1,2,3' or 'LV=1;epi=1,2;LA=3'")
    return tuple(structures)


def _parse_ints(values: str, spec: str) -> Tuple[int, ...]:
    try:
        parsed = tuple(int(v) for v in values.split(",") if v.strip())
    except ValueError:
        raise EvaluationError(f"labels must be integers in {spec!r}; expected e.g. '1,2,3' or 'LV=1;epi=1,2;LA=3'")
    if not parsed:
        raise EvaluationError(f"empty label list in {spec!r}")
    return parsed


def _dataset_json_labels(path: str) -> Dict[str, Tuple[int, ...]]:
    """The 'labels' of an nnU-Net dataset.json as name -> label values (a region is a list)."""
    try:
        with open(path) as f:
            labels = json.load(f).get("labels")
    except (OSError, ValueError) as e:
        raise EvaluationError(f"cannot read {path}: {e}")
    if not isinstance(labels, dict) or not labels:
        raise EvaluationError(f"{path} has no 'labels' dictionary (expected nnU-Net v2's dataset.json)")
    return {name: tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
            for name, value in labels.items()}


def structures_from_dataset_json(path: str) -> Tuple[Structure, ...]:
    """Structures from the 'labels' of an nnU-Net dataset.json (regions as lists), background and ignore left out."""
    return tuple(Structure(name, values) for name, values in _dataset_json_labels(path).items()
                 if name != "ignore" and values != (0,))


def dataset_json_label_check(path: str) -> LabelCheck:
    """Files may hold background, every label of the dataset.json and its ignore label; nothing else."""
    known = frozenset({0}).union(*_dataset_json_labels(path).values())
    return LabelCheck(known, f"the labels of {path}",
                      "give the dataset.json of the dataset these files belong to, or name the labels with --labels")


def label_spec_check(structures: Tuple[Structure, ...]) -> LabelCheck:
    """Labels named on the command line: other prediction labels are warned about, since leaving a label out may
    be deliberate (evaluating some structures only) but often is a mistake."""
    known = frozenset({0}).union(*(s.labels for s in structures))
    return LabelCheck(known, "the labels given with --labels", "add them to --labels to evaluate them",
                      strict=False)
