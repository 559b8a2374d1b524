"""nnunetv2_xdim_label_efficiency: how good is each trainer with N labelled cases, on your own dataset?

    nnunetv2_xdim_label_efficiency -d 506 -c 2d -o le_ph2 --test-size 40 --sizes 5 10 20 60 --repeats 3 3 2 1 \\
        -tr nnUNetTrainerXDimEfficientNetLite0 nnUNetTrainerXDimEfficientNetLite0_Scratch nnUNetTrainerXDimBaseline \\
        --arm nnUNetTrainerXDimBaseline:nnUNetResEncUNetMPlans@10,60 --epochs 50 --iterations 250

A fixed test set is taken from the labelled cases (a given list, or a seeded fraction that keeps groups together
and, where given, classes in proportion); from the rest (the pool), nested training subsets of N cases are drawn
for each N, several seeded repeats each. Each subset becomes an nnU-Net fold appended after the dataset's existing
folds in splits_final.json (existing folds are never changed); label_efficiency.json beside it records which fold
is which. Every arm is trained with nnUNetv2_train at one budget, predicts the test set with nnUNetv2_predict from
checkpoint_final (test-time mirroring the same for every arm) and is scored against the original label files.

A second identical call trains nothing; another budget trains anew into its own folder. Results: runs.csv,
cases.csv, summary.md and dice_vs_n.png in the output folder.
"""
import argparse
import os
import sys
import time
from typing import Dict, List

from ..budget import NNUNET_BUDGET, read_budget
from ..commands import CommandError, shell_line
from ..discovery import enable_trainer_discovery
from .arms import DEFAULT_PLANS, ArmError, arms_from_args, check_trainers
from .design import Design, DesignError, draw_test_set, read_case_info, read_test_list
from .report import load_records, write_report
from .study import Budget, RunSpec, Study, StudyError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnunetv2_xdim_label_efficiency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", type=int, required=True, help="nnU-Net dataset id (in nnUNet_raw)")
    p.add_argument("-c", "--configuration", required=True, help="nnU-Net configuration, e.g. 2d or 3d_fullres")
    p.add_argument("-o", "--output", required=True, help="the study's folder (models, predictions, results)")
    p.add_argument("-tr", "--trainers", nargs="+", default=[], metavar="TRAINER",
                   help="trainers run at every N on the plans of -p (nnU-Net's network: nnUNetTrainerXDimBaseline)")
    p.add_argument("--arm", action="append", default=[], metavar="TRAINER[:PLANS][@N,N]",
                   help="a further arm on other plans and/or only at some N, e.g. "
                        "nnUNetTrainerXDimBaseline:nnUNetResEncUNetMPlans@10,60 (repeatable)")
    p.add_argument("-p", "--plans", default=DEFAULT_PLANS, help=f"plans of the -tr arms (default {DEFAULT_PLANS})")
    p.add_argument("--sizes", type=int, nargs="+", required=True, metavar="N", help="numbers of training cases")
    p.add_argument("--repeats", type=int, nargs="+", default=[1], metavar="K",
                   help="seeded repeats per N: one number for all, or one per --sizes entry (default 1)")
    test = p.add_mutually_exclusive_group()
    test.add_argument("--test-cases", metavar="FILE", help="test case ids, one per line (or a JSON list)")
    test.add_argument("--test-size", type=int, help="number of test cases to draw")
    test.add_argument("--test-fraction", type=float, help="fraction of the labelled cases to draw as test set")
    p.add_argument("--seed", type=int, default=0, help="seed of the test draw and of the subsets (default 0)")
    p.add_argument("--case-info", metavar="FILE",
                   help="CSV/JSON with columns case[, group][, class]: groups never straddle test and pool, classes "
                        "are stratified (default: case_info.json/.csv in the raw dataset folder, when there)")
    p.add_argument("--epochs", type=int, help="default: nnUNet_xdim_epochs, else nnU-Net's 1000")
    p.add_argument("--iterations", type=int, help="per epoch; default: nnUNet_xdim_iterations, else 250")
    p.add_argument("--val-iterations", type=int, help="per epoch; default: nnUNet_xdim_val_iterations, else 50")
    p.add_argument("--target-spacing", type=float, nargs="+", metavar="S",
                   help="train at a coarser spacing through plans made with nnU-Net's -overwrite_target_spacing "
                        "(2 numbers for 2d, 3 for 3d); predictions still come back at the images' own size")
    p.add_argument("--device", help="cuda, cpu or mps (default: cuda when available)")
    p.add_argument("--no-mirroring", action="store_true", help="predict without test-time mirroring (every arm)")
    p.add_argument("-np", "--num-processes", type=int, default=min(4, os.cpu_count() or 1),
                   help="worker processes of planning, preprocessing and prediction")
    p.add_argument("--max-runs", type=int, help="train at most this many runs in this call")
    p.add_argument("--gain", type=float, default=0.02,
                   help="a paired difference is a gain when mean - std >= this (default 0.02)")
    p.add_argument("--dry-run", action="store_true", help="print the design, the commands and a time estimate")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the finished runs")
    return p


def budget_from(args) -> Budget:
    env = {**NNUNET_BUDGET, **read_budget()}
    values = {k: getattr(args, k) or env[k] for k in NNUNET_BUDGET}
    if any(v < 1 for v in values.values()):
        raise StudyError("--epochs, --iterations and --val-iterations must be positive")
    return Budget(**values)


def repeats_per_size(args) -> Dict[int, int]:
    if len(set(args.sizes)) != len(args.sizes):
        raise StudyError(f"--sizes {args.sizes} names an N twice")
    if len(args.repeats) not in (1, len(args.sizes)):
        raise StudyError(f"--repeats takes one number or one per --sizes entry ({len(args.sizes)}), got "
                         f"{len(args.repeats)}")
    reps = args.repeats * len(args.sizes) if len(args.repeats) == 1 else args.repeats
    if min(reps) < 1:
        raise StudyError("--repeats must be at least 1")
    return dict(zip(args.sizes, reps))


def resolve_design(study: Study, args, existing) -> Design:
    """The stored design, or a new one; a test set asked for that differs from the stored one is refused."""
    info_path = args.case_info or next((os.path.join(study.raw, f) for f in ("case_info.json", "case_info.csv")
                                        if os.path.isfile(os.path.join(study.raw, f))), None)
    asked = args.test_cases or args.test_size or args.test_fraction
    if not asked:
        if existing is None:
            raise StudyError("no test set yet: give --test-cases, --test-size or --test-fraction")
        return existing
    info = read_case_info(info_path, study.cases) if info_path else {c: {"group": c} for c in study.cases}
    if args.test_cases:
        test, rule = read_test_list(args.test_cases, study.cases), f"list {os.path.basename(args.test_cases)}"
    else:
        size = args.test_size or int(round(args.test_fraction * len(study.cases)))
        test = draw_test_set(study.cases, size, args.seed, info)
        rule = (f"{size} drawn with seed {args.seed}" + (f", groups and classes from {os.path.basename(info_path)}"
                                                        if info_path else ""))
    if existing is not None:
        if existing.test != test:
            raise StudyError(f"{study.preprocessed}/label_efficiency.json holds another test set ({existing.test_rule}, "
                             f"{len(existing.test)} cases) than the one asked for ({rule}, {len(test)} cases): "
                             f"repeat the stored test options, or leave them out to reuse it")
        return existing
    return Design(test, sorted(set(study.cases) - set(test)), args.seed, rule, {})


def estimate(study: Study, specs: List[RunSpec], todo: List[RunSpec]) -> str:
    """Seconds per run from this study's finished runs of the same arm, else a timing of the network itself."""
    from .timing import seconds_per_iteration
    total, notes, unknown = 0.0, [], 0
    measured = {}
    for r in load_records(os.path.join(study.output, "runs", study.variant)):
        if r.get("train_s"):
            measured.setdefault((r["trainer"], r["plans"]), []).append(r["train_s"] + r.get("predict_s", 0))
    for arm_plans in sorted({(s.arm.trainer, s.plans) for s in todo}):
        count = sum(1 for s in todo if (s.arm.trainer, s.plans) == arm_plans)
        if arm_plans in measured:
            per_run = sum(measured[arm_plans]) / len(measured[arm_plans])
            notes.append(f"{arm_plans[0]} ({arm_plans[1]}): {count} run(s) x {per_run / 60:.1f} min (measured)")
        else:
            sec_it = seconds_per_iteration(study, *arm_plans)
            if sec_it is None:
                notes.append(f"{arm_plans[0]} ({arm_plans[1]}): {count} run(s), no estimate (plans not made yet)")
                unknown += count
                continue
            b = study.budget
            per_run = sec_it * (b.total_iterations + b.epochs * b.val_iterations / 3)
            notes.append(f"{arm_plans[0]} ({arm_plans[1]}): {count} run(s) x {per_run / 60:.1f} min (network "
                         f"compute only, {sec_it:.2f} s per iteration: data loading and prediction come on top)")
        total += count * per_run
    return "\n".join(["time estimate:"] + ["  " + n for n in notes] +
                     [f"  about {total / 3600:.1f} h for {len(todo) - unknown} of the {len(todo)} runs still to do "
                      f"({len(specs)} in all)" + (f"; {unknown} without an estimate" if unknown else "")])


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (StudyError, DesignError, ArmError, CommandError, FileNotFoundError) as e:
        sys.exit(f"nnunetv2_xdim_label_efficiency: {e}")


def run(args) -> None:
    enable_trainer_discovery()  # before nnU-Net is imported: its trainer lookup reads the variable at import
    import torch
    budget = budget_from(args)
    reps = repeats_per_size(args)
    arms = arms_from_args(args.trainers, args.arm, args.plans)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    study = Study(args.dataset, args.configuration, args.output, arms, budget, device, not args.no_mirroring,
                  args.target_spacing, args.num_processes)
    if args.report_only:
        return report(study, args)
    store = study.design_store()
    design = resolve_design(study, args, store.load())
    wanted = [(n, r) for n, k in sorted(reps.items()) for r in range(k)]
    for n in reps:
        if n > len(design.pool):
            raise StudyError(f"N = {n} is larger than the training pool ({len(design.pool)} cases once the "
                             f"{len(design.test)} test cases are taken): ask for N <= {len(design.pool)}")
    check_trainers(arms, budget.is_default)
    if not args.dry_run:
        study.check_output_folder()
        design = store.ensure(design, wanted)
    else:
        design = store.ensure(design, wanted, write=False)
    print(f"{study.name} {study.configuration}: {len(design.test)} test cases ({design.test_rule}), pool "
          f"{len(design.pool)}; budget {budget.epochs} x {budget.iterations} (+{budget.val_iterations}); device "
          f"{device}; test-time mirroring {'on' if study.tta else 'off'}", flush=True)
    plans = {arm: study.ensure_plans(arm, args.dry_run) for arm in arms}
    specs = [RunSpec(arm, plans[arm], n, r, design.fold_of(n, r)) for n, r in wanted for arm in arms
             if arm.runs_at(n)]
    todo = [s for s in specs if study.load_record(s) is None]
    if args.dry_run:
        for s in specs:
            state = "done" if s not in todo else ("trained, to predict" if study.is_trained(s) else "to train")
            print(f"  N={s.n} repeat {s.repeat} fold {s.fold} {s.arm.name}: {state}")
            if s in todo:
                if not study.is_trained(s):
                    print("    " + shell_line(study.train_command(s), study.budget.env()))
                print("    " + shell_line(study.predict_command(s, os.path.join(study.output, "test_images"))))
        print(estimate(study, specs, todo))
        return
    done, start = 0, time.time()
    for i, spec in enumerate(specs, 1):
        if spec not in todo:
            continue
        if args.max_runs is not None and done >= args.max_runs:
            print(f"stopping after {done} run(s) (--max-runs); call again to go on", flush=True)
            break
        head = f"[{i}/{len(specs)}] {spec.arm.name} N={spec.n} repeat {spec.repeat} (fold {spec.fold})"
        record = study.run(spec, design, lambda what: print(f"{head}: {what} ...", flush=True))
        done += 1
        fp = record.get("false_positive_rate_empty")
        print(f"{head}: Dice {record['dice_mean']:.4f}" + (f", false positives on empty {fp:.3f}" if fp is not None
                                                           else "")
              + f"; trained in {record['train_s'] / 60:.1f} min; {(time.time() - start) / 60:.0f} min so far",
              flush=True)
        report(study, args)
    report(study, args)


def report(study: Study, args) -> None:
    records = [r for r in load_records(os.path.join(study.output, "runs", study.variant))]
    default_plans = study.plans_name(arms_from_args([], [f"x:{args.plans}"], args.plans)[0])
    paths = write_report(records, study.output, default_plans, args.gain)
    if paths:
        print(f"report: {paths['summary']} ({len(records)} runs)", flush=True)
