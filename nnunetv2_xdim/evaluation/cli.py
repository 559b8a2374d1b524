"""nnunetv2_xdim_evaluate: challenge metrics and reports for nnU-Net predictions.

    nnunetv2_xdim_evaluate evaluate -r REF -p PRED --preset camus -o OUT
    nnunetv2_xdim_evaluate compare  -r REF -p RUN_A RUN_B ... --preset brats -o OUT
"""
import argparse
import os
import sys
import warnings
from typing import List, Optional

from nnunetv2_xdim.evaluation import challenges
from nnunetv2_xdim.evaluation.errors import EvaluationError
from nnunetv2_xdim.evaluation.runner import evaluate

PRESETS = ("camus", "chaos", "brats", "generic")

_SOURCES = """prediction sources: a folder of predictions (e.g. nnUNetv2_predict output or an exported submission);
an nnU-Net model folder <Trainer__Plans__config> (its fold_N/validation folders are aggregated, one run);
or a dataset results folder $nnUNet_results/DatasetXXX_Name (one run per model folder inside).
Write NAME=PATH to name a run. Predictions are matched to references by file name without ending."""


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-r", "--ref", required=True,
                        help="folder of reference label files, e.g. nnUNet_raw/DatasetXXX/labelsTr or "
                             "nnUNet_preprocessed/DatasetXXX/gt_segmentations")
    parser.add_argument("-o", "--output", required=True, help="output folder for metrics_per_case.csv, "
                        "summary.md, boxplots.png (and camus_clinical.csv)")
    parser.add_argument("--preset", choices=PRESETS, required=True,
                        help="challenge conventions: structures, grouping and empty-mask rules (generic needs "
                             "--labels or --dataset-json)")
    parser.add_argument("--labels", help="structures to evaluate, overriding the preset's: '1,2,3' (one per "
                        "label) or 'LV=1;epi=1,2;LA=3' (named, a region is a comma-separated label list)")
    parser.add_argument("--dataset-json", help="take the structures from the 'labels' of this nnU-Net "
                        "dataset.json (regions included)")
    parser.add_argument("--brats-labels", choices=sorted(challenges.BRATS_LABELS), default="nnunet",
                        help="BraTS label convention of the files: nnunet (1 oedema, 2 necrosis, 3 enhancing: "
                             "labelsTr and predictions of our brats2022 converter and nnU-Net's Dataset137), "
                             "2021 (1 necrosis, 2 oedema, 4 enhancing: BraTS 2021/2022 files and exported "
                             "submissions), 2023 (1 necrosis, 2 oedema, 3 enhancing). Default: %(default)s")
    parser.add_argument("--camus-info", help="CAMUS release folder holding patientNNNN/Info_2CH.cfg files: "
                        "clinical indices are also compared with their LVedv/LVesv/LVef")
    parser.add_argument("--folds", nargs="+", help="folds of model folders to aggregate (default: every "
                        "fold_N with a validation folder; 'all' selects fold_all)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="evaluate only the predicted cases when some references have no prediction")
    parser.add_argument("-np", "--num-processes", type=int, default=min(8, os.cpu_count() or 1),
                        help="worker processes, one case at a time each (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunetv2_xdim_evaluate",
        description="Challenge metrics (Dice, HD, HD95, ASSD, RAVD in physical units; CHAOS points; CAMUS "
                    "clinical indices) for nnU-Net predictions, with a per-case CSV, a Markdown summary and box "
                    "plots.")
    sub = parser.add_subparsers(dest="command", required=True)
    single = sub.add_parser("evaluate", help="evaluate one prediction folder or cross-validated model folder",
                            epilog=_SOURCES)
    single.add_argument("-p", "--pred", required=True, help="prediction source (see below)")
    _common_arguments(single)
    compare = sub.add_parser("compare", help="evaluate several runs (trainers, configurations) side by side",
                             epilog=_SOURCES)
    compare.add_argument("-p", "--pred", required=True, nargs="+", help="prediction sources (see below); the "
                         "first run is the baseline of the paired comparison")
    _common_arguments(compare)
    return parser


def make_preset(args: argparse.Namespace) -> challenges.Preset:
    if args.labels and args.dataset_json:
        raise EvaluationError("give either --labels or --dataset-json, not both")
    structures = label_check = None
    if args.labels:
        structures = challenges.parse_label_spec(args.labels)
        label_check = challenges.label_spec_check(structures)
    elif args.dataset_json:
        structures = challenges.structures_from_dataset_json(args.dataset_json)
        label_check = challenges.dataset_json_label_check(args.dataset_json)
    if args.preset == "generic":
        if structures is None:
            raise EvaluationError("--preset generic needs --labels or --dataset-json")
        return challenges.generic(structures, label_check)
    preset = {"camus": challenges.CAMUS, "chaos": challenges.CHAOS}.get(args.preset) or \
        challenges.brats(args.brats_labels)
    return preset.with_structures(structures, label_check) if structures else preset


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    if args.camus_info and args.preset != "camus":
        sys.exit("error: --camus-info only applies to --preset camus")
    try:
        preset = make_preset(args)
        specs = [args.pred] if isinstance(args.pred, str) else args.pred
        outputs = evaluate(args.ref, specs, preset, args.output, num_processes=args.num_processes,
                           folds=args.folds, allow_missing=args.allow_missing, camus_info=args.camus_info)
    except EvaluationError as e:
        sys.exit(f"error: {e}")
    for name, path in outputs.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
