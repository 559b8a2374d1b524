"""Should the pretrained stem see its weights' input scaling? Decided by nnU-Net cross-validation on the pool.

The label-efficiency study fixes a test set per dataset (label_efficiency.json beside splits_final.json); this
script never touches it. It makes a dataset of the pool cases only (links to the study dataset's files), plans it
like the study (same target spacing), and trains each arm on nnU-Net folds that each hold one fifth of the pool
for training and validate on the other four fifths (the small-data regime the study is about; every case is
validated four times, by models that never saw it). nnU-Net's own final validation (checkpoint_final, test-time
mirroring) writes the predictions; our evaluation scores them against the original label files.

    python results/label_efficiency/input_norm_cv.py -d 506 --pool-id 516 -o WORK/input_norm_ph2 \\
        --target-spacing 4 4 --epochs 20 --iterations 25 --val-iterations 3 \\
        -tr nnUNetTrainerXDimEfficientNetLite0_InputNormNone nnUNetTrainerXDimEfficientNetLite0_InputNormBackbone

Writes OUT/runs.csv (one row per arm and fold) and prints the paired per-fold differences.
"""
import argparse
import csv
import json
import os
import random
import shutil
import sys

from nnunetv2_xdim.commands import run_logged
from nnunetv2_xdim.discovery import enable_trainer_discovery
from nnunetv2_xdim.label_efficiency.arms import Arm
from nnunetv2_xdim.label_efficiency.report import mean_std
from nnunetv2_xdim.label_efficiency.scoring import score_cases, summarise
from nnunetv2_xdim.label_efficiency.study import Budget, Study, find_dataset_folder

HERE = os.path.dirname(os.path.abspath(__file__))


def make_pool_dataset(source_raw: str, pool: list, pool_id: int) -> str:
    raw_root = os.path.dirname(source_raw)
    name = f"Dataset{pool_id:03d}_{os.path.basename(source_raw).split('_', 1)[1]}pool"
    out = os.path.join(raw_root, name)
    if os.path.isdir(out):
        return out
    with open(os.path.join(source_raw, "dataset.json")) as f:
        dataset_json = json.load(f)
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(tmp, sub))
    ending = dataset_json["file_ending"]
    for case in pool:
        for f in os.listdir(os.path.join(source_raw, "imagesTr")):
            if f.startswith(case + "_") and f.endswith(ending) and len(f) == len(case) + 5 + len(ending):
                os.symlink(os.path.join(source_raw, "imagesTr", f), os.path.join(tmp, "imagesTr", f))
        os.symlink(os.path.join(source_raw, "labelsTr", case + ending), os.path.join(tmp, "labelsTr", case + ending))
    dataset_json["numTraining"] = len(pool)
    dataset_json["description"] = f"the label-efficiency pool of {os.path.basename(source_raw)} (no test case)"
    with open(os.path.join(tmp, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=1)
    os.replace(tmp, out)
    return out


def small_folds(pool: list, k: int, seed: int) -> list:
    """k folds, each training on one k-th of the pool and validating on the rest."""
    order = sorted(pool)
    random.Random(f"input-norm-cv-{seed}").shuffle(order)
    parts = [sorted(order[i::k]) for i in range(k)]
    return [{"train": parts[i], "val": sorted(c for j, p in enumerate(parts) if j != i for c in p)} for i in range(k)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", type=int, required=True, help="the study dataset (with label_efficiency.json)")
    p.add_argument("--pool-id", type=int, required=True, help="dataset id for the pool-only dataset")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("-tr", "--trainers", nargs="+", required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-spacing", type=float, nargs="+")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--iterations", type=int, required=True)
    p.add_argument("--val-iterations", type=int, required=True)
    p.add_argument("-np", "--num-processes", type=int, default=2)
    args = p.parse_args(argv)

    env = dict(os.environ)
    enable_trainer_discovery(env)
    env["nnUNet_extTrainer"] += os.pathsep + os.path.join(HERE, "trainers")
    os.environ.update(env)
    source = find_dataset_folder(env.get("nnUNet_raw"), args.dataset, "nnUNet_raw")
    design_file = os.path.join(env["nnUNet_preprocessed"], os.path.basename(source), "label_efficiency.json")
    with open(design_file) as f:
        pool = json.load(f)["pool"]
    make_pool_dataset(source, pool, args.pool_id)

    budget = Budget(args.epochs, args.iterations, args.val_iterations)
    study = Study(args.pool_id, "2d", args.output, [Arm(t) for t in args.trainers], budget, "cpu", True,
                  args.target_spacing, args.num_processes)
    plans = study.ensure_plans(study.arms[0], dry_run=False)
    splits = os.path.join(study.preprocessed, "splits_final.json")
    folds = small_folds(pool, args.folds, args.seed)
    if os.path.isfile(splits):
        with open(splits) as f:
            if json.load(f) != folds:
                sys.exit(f"{splits} holds other folds: remove it (and the models trained on it) to start anew")
    else:
        with open(splits, "w") as f:
            json.dump(folds, f, indent=1)

    results = os.path.join(study.output, "models")
    run_env = dict(study.env, nnUNet_results=results, **budget.env())
    rows = []
    for fold in range(args.folds):
        for trainer in args.trainers:
            model = os.path.join(results, study.name, f"{trainer}__{plans}__2d", f"fold_{fold}")
            if not os.path.isfile(os.path.join(model, "checkpoint_final.pth")):
                print(f"fold {fold} {trainer}: training", flush=True)
                cmd = ["nnUNetv2_train", str(args.pool_id), "2d", str(fold), "-tr", trainer, "-p", plans, "-device",
                       "cpu"]
                if os.path.isfile(os.path.join(model, "checkpoint_latest.pth")):
                    cmd.append("--c")
                run_logged(cmd, run_env, study.log(f"train_{trainer}_fold{fold}"), lambda line: False)
            refs = {c: os.path.join(study.raw, "labelsTr", c + study.file_ending) for c in folds[fold]["val"]}
            cases = score_cases(os.path.join(model, "validation"), refs, os.path.join(study.raw, "dataset.json"),
                                study.file_ending)
            rows.append({"trainer": trainer, "fold": fold, "n_train": len(folds[fold]["train"]),
                         "dice_mean": round(summarise(cases)["dice_mean"], 4)})
            print(f"fold {fold} {trainer}: Dice {rows[-1]['dice_mean']:.4f}", flush=True)
    with open(os.path.join(study.output, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    dice = {(r["trainer"], r["fold"]): r["dice_mean"] for r in rows}
    ref = args.trainers[0]
    for trainer in args.trainers[1:]:
        diffs = [dice[(trainer, k)] - dice[(ref, k)] for k in range(args.folds)]
        m, s = mean_std(diffs)
        print(f"{trainer} - {ref}: {m:+.4f} +- {s:.4f} over {len(diffs)} folds ({sum(d > 0 for d in diffs)} ahead)")


if __name__ == "__main__":
    main()
