"""Does the ImageNet-pretrained encoder pay off, and with which recipe? Measured on real data through nnU-Net's
own commands.

For a real dataset given by path (the six BraTS 2018 cases of ../shared/data/brats18_dev: FLAIR + T1, whole
tumour) the script
  1. converts it into an nnU-Net dataset, resampled to a coarser isotropic spacing so that CPUs can train it
     (2 mm for `2d`, 3 mm for `3d_fullres` by default; --spacing-2d/--spacing-3d, 1 = native), with FLAIR and
     T1 as input channels (--modalities T1: T1 alone, a harder task where the tumour is far less visible),
  2. runs `nnUNetv2_plan_and_preprocess` (and, with --gpu-memory-target, `nnUNetv2_plan_experiment
     -gpu_memory_target X -overwrite_plans_name ...` for smaller batches or patches), writes patient-level folds
     (6 cases: 3 folds of 4 training / 2 validation cases; --train-cases K keeps only K of the 4 training
     cases of each fold, a different one per fold, in a dataset of its own: data scarcity, the paper's setting),
  3. trains every arm with `nnUNetv2_train` at the same budget (nnUNet_xdim_epochs / _iterations, honoured by
     the XDim trainers and by nnUNetTrainerXDimBaseline = nnU-Net's default network and recipe) on the same
     folds, `--repeats` times (nnU-Net does not seed: repeats are independent runs),
  4. reads nnU-Net's own final validation (fold_k/validation/summary.json: Dice of the full sliding-window
     prediction of each validation case) and its per-epoch pseudo-Dice (checkpoint logging),
  5. writes runs.csv (--runs: every run ever made, one row each) and, under --out (reports/), <config>.md (per
     arm: Dice per fold, mean and spread, paired difference against the _Scratch twin, against nnU-Net's default
     and against the arm it changes, wall time, budget, machine) and <config>_curves.png (validation
     pseudo-Dice against training iterations).

Arms (--arms, default: pretrained scratch default): arms.py declares each, with the arms its report compares it
with; the docstrings of trainers/nnunetv2_xdim_recipe_trainers.py say what each changes. Finished runs are kept
and skipped, so the study grows run by run; --report-only rewrites a report from runs.csv alone (re-invoking with
more --repeats than are finished would start the missing runs instead). Several study processes may run side by
side (one per core or GPU, with different --arms, --folds or --repeats): they prepare each dataset once and share
runs.csv under locks, and a fold that another process is training is skipped with a message, never removed or
trained twice.

    python results/recipe_study/recipe_study.py ../shared/data/brats18_dev --configs 2d --epochs 10 --iterations 25
    python results/recipe_study/recipe_study.py DATA --configs 3d_fullres --arms pretrained scratch default \\
        --device cuda
    python results/recipe_study/recipe_study.py DATA --configs 2d --train-cases 1 --spacing-2d 1 \\
        --gpu-memory-target 1.2 --epochs 8 --iterations 25 --val-iterations 5 --threads 1  # 1 mm; batch 16 as at 2 mm
    python results/recipe_study/recipe_study.py --report-only --configs 3d_fullres --train-cases 2 --epochs 8 \\
        --iterations 25
    python results/recipe_study/recipe_study.py DATA --configs 2d --train-cases 2 --modalities T1 \\
        --arms adamw adamw_scratch default --epochs 8 --iterations 25 --val-iterations 5 --threads 1  # T1 alone
"""
import argparse
import contextlib
import csv
import json
import os
import platform
import re
import shutil
import sys
import time

import numpy as np
import SimpleITK as sitk

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
from nnunetv2_xdim.commands import CommandError, run_logged  # noqa: E402
from results.recipe_study.arms import ARMS, REFERENCE_ARMS, add_study_trainers  # noqa: E402

DATASET_IDS = {"2d": 971, "3d_fullres": 972}
DEFAULT_SPACING = {"2d": 2.0, "3d_fullres": 3.0}
MAX_SCARCE = 3  # --train-cases K uses dataset 979 + 2K (+1 for 3d_fullres): its own splits, results and runs
MODALITIES = ("FLAIR", "T1")  # the input channels of the study's first datasets; --modalities takes a subset
# a subset of the channels is a dataset of its own, its id moved down by this (T1 alone at 2 mm in 2d: 471)
MODALITY_ID_OFFSET = {("FLAIR", "T1"): 0, ("T1",): 500, ("FLAIR",): 600}
RUN_FIELDS = ["config", "spacing", "modalities", "arm", "trainer", "plans", "fold", "repeat", "train_cases", "epochs", "iterations",
              "dice_mean", "dice_per_case", "wall_s", "device", "machine", "finished", "pseudo_dice"]


# ------------------------------------------------------------------------------------------------ dataset

def _resample(img: sitk.Image, spacing: float, label: bool) -> sitk.Image:
    size = [int(round(sz * sp / spacing)) for sz, sp in zip(img.GetSize(), img.GetSpacing())]
    return sitk.Resample(img, size, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
                         img.GetOrigin(), (spacing,) * 3, img.GetDirection(), 0, img.GetPixelID())


@contextlib.contextmanager
def exclusive(lock_path: str, wait: bool = True):
    """Holds an exclusive lock on lock_path for study processes started side by side (one per arm list, core or
    GPU): they share runs.csv, and must not convert or preprocess the same dataset at once (nnU-Net's preprocessing
    writes its arrays in place; a second writer fails or corrupts the first one's files). Yields whether the lock
    is held: with wait=False it yields False at once when another process holds it. POSIX only; elsewhere it
    does not lock (and yields True)."""
    try:
        import fcntl
    except ImportError:
        yield True
        return
    with open(lock_path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_dataset(data: str, raw_root: str, dataset_id: int, spacing: float, modalities=MODALITIES) -> str:
    """case_*/FLAIR.nii.gz, T1.nii.gz, GT_W.nii.gz -> Dataset<id>_BraTS18dev<spacing>mm[_<modality>] (channels:
    `modalities`, FLAIR and T1 by default)."""
    out = os.path.join(raw_root, dataset_name(dataset_id, spacing, modalities))
    if os.path.isfile(os.path.join(out, "dataset.json")):
        return out
    cases = sorted(d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d)))
    if len(cases) < 3:
        raise SystemExit(f"{data}: expected case folders with FLAIR.nii.gz, T1.nii.gz, GT_W.nii.gz, found {cases}")
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "imagesTr"))
    os.makedirs(os.path.join(tmp, "labelsTr"))
    for case in cases:
        for i, mod in enumerate(modalities):
            path = os.path.join(data, case, f"{mod}.nii.gz")
            if not os.path.isfile(path):
                raise SystemExit(f"missing {path}")
            img = sitk.ReadImage(path, sitk.sitkFloat32)
            sitk.WriteImage(_resample(img, spacing, False) if spacing != 1 else img,
                            os.path.join(tmp, "imagesTr", f"{case}_{i:04d}.nii.gz"))
        seg = sitk.ReadImage(os.path.join(data, case, "GT_W.nii.gz"), sitk.sitkUInt8)
        sitk.WriteImage(_resample(seg, spacing, True) if spacing != 1 else seg,
                        os.path.join(tmp, "labelsTr", f"{case}.nii.gz"))
    with open(os.path.join(tmp, "dataset.json"), "w") as f:
        json.dump({"channel_names": {str(i): m for i, m in enumerate(modalities)}, "labels": {"background": 0, "tumour": 1},
                   "numTraining": len(cases), "file_ending": ".nii.gz",
                   "description": f"brats18_dev ({' + '.join(modalities)}) resampled to {spacing} mm for the recipe "
                                  "study"}, f, indent=1)
    os.rename(tmp, out)
    return out


def missing_preprocessed_cases(data_dir: str, cases) -> list:
    """The cases whose preprocessed arrays are not all in data_dir. nnU-Net writes a case's .pkl after its two
    arrays, so a case is complete when all three are there; a preparation killed midway leaves cases without them,
    and training on that folder would silently use fewer cases."""
    have = set(os.listdir(data_dir)) if os.path.isdir(data_dir) else set()
    return [c for c in cases if not {f"{c}.b2nd", f"{c}_seg.b2nd", f"{c}.pkl"} <= have]


def modalities_suffix(modalities) -> str:
    """'' for the default inputs (FLAIR + T1), else e.g. '_T1': names the datasets and reports of a subset."""
    return "" if tuple(modalities) == MODALITIES else "_" + "_".join(modalities)


def dataset_name(dataset_id: int, spacing: float, modalities=MODALITIES) -> str:
    return f"Dataset{dataset_id}_BraTS18dev{str(spacing).replace('.', 'p')}mm" + modalities_suffix(modalities)


def dataset_id(config: str, train_cases, spacing: float, modalities=MODALITIES) -> int:
    """One dataset (raw, plans, splits, results) per config, number of training cases, spacing and input
    channels. The default spacing keeps the study's first ids; another spacing s moves the id down by 100 s (1 mm:
    871, 881, ...); a subset of the channels moves it further down (MODALITY_ID_OFFSET)."""
    did = DATASET_IDS[config] if not train_cases else 979 + 2 * train_cases + (config == "3d_fullres")
    did -= MODALITY_ID_OFFSET[tuple(modalities)]
    return did if spacing == DEFAULT_SPACING[config] else did - int(round(100 * spacing))


def make_splits(cases: list, n_folds: int, train_cases=None) -> list:
    """Patient-level folds: case k goes to validation fold k mod n_folds. With train_cases=K, fold f trains on
    K of its remaining cases, taken from position f on, so that the folds train on different cases."""
    splits = []
    for f in range(n_folds):
        val = [c for i, c in enumerate(cases) if i % n_folds == f]
        train = [c for c in cases if c not in val]
        if train_cases:
            if train_cases > len(train):
                raise SystemExit(f"--train-cases {train_cases}: fold {f} has only {len(train)} training cases")
            train = (train[f % len(train):] + train[:f % len(train)])[:train_cases]
        splits.append({"train": train, "val": val})
    return splits


def write_splits(preprocessed: str, splits: list) -> None:
    with open(os.path.join(preprocessed, "splits_final.json"), "w") as fh:
        json.dump(splits, fh, indent=1)


# ------------------------------------------------------------------------------------------------ runs

def run(cmd, env, log):
    """Run `cmd`, its output appended to the study's command log (shared by the study processes)."""
    try:
        run_logged(cmd, env, log, show=lambda line: False)
    except CommandError as e:
        raise SystemExit(str(e))


def train_command(threads):
    """nnUNetv2_train, or its entry point with the CPU thread count it sets capped at `threads`."""
    if not threads:
        return ["nnUNetv2_train"]
    launcher = ("import sys, multiprocessing; multiprocessing.cpu_count = lambda: {n}; "
                "from nnunetv2.run.run_training import run_training_entry; sys.argv[0] = 'nnUNetv2_train'; "
                "run_training_entry()").format(n=int(threads))
    return [sys.executable, "-c", launcher]


def load_runs(path):
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:  # runs recorded before --train-cases existed used the 4 training cases of their fold
        r["train_cases"] = r.get("train_cases") or "4"
        # runs recorded before the spacing column: their plans description starts with it ("2.0 mm, plans ...")
        r["spacing"] = r.get("spacing") or r["plans"].split(" mm")[0]
        r["modalities"] = r.get("modalities") or " ".join(MODALITIES)  # runs from before --modalities
    return rows


def plans_name(row) -> str:
    """The plans identifier of a run, from its description ("2.0 mm, plans nnUNetPlans_4GB: patch ...")."""
    return row["plans"].split("plans ", 1)[1].split(":", 1)[0]


def run_key(r) -> tuple:
    """What makes a run unique in runs.csv: a newer run with the same key replaces it."""
    return (r["config"], float(r["spacing"]), r.get("modalities") or " ".join(MODALITIES), plans_name(r), r["arm"], str(r["fold"]), str(r["repeat"]),
            str(r["train_cases"]), int(r["epochs"]), int(r["iterations"]))


def record_run(path, row=None, curves=None):
    """Add one run to runs.csv (replacing an older run with the same key, budget included), and/or fill in the
    pseudo-Dice curves of recorded runs ({run_key: curve}). Several study processes may share the file (e.g.
    one per core or GPU): the read-modify-write happens under a lock."""
    with exclusive(os.path.join(os.path.dirname(path), ".runs.lock")):
        rows = [r for r in load_runs(path) if row is None or run_key(r) != run_key(row)] + ([row] if row else [])
        for r in rows:
            if not r.get("pseudo_dice") and run_key(r) in (curves or {}):
                r["pseudo_dice"] = format_curve(curves[run_key(r)])
        rows.sort(key=lambda r: (r["config"], float(r["spacing"]), int(r["train_cases"]), int(r["epochs"]), int(r["iterations"]), r["arm"],
                                 int(r["fold"]), int(r["repeat"])))
        with open(path + ".tmp", "w", newline="") as f:
            w = csv.DictWriter(f, RUN_FIELDS)
            w.writeheader()
            w.writerows(rows)
        os.replace(path + ".tmp", path)


@contextlib.contextmanager
def fold_to_train(model: str, fold: int, key: tuple, runs_csv: str):
    """Claims fold `fold` of the model folder `model` for this process and yields why to skip it, or None: train
    it, its old folder is removed. The claim lasts until the run is recorded. Study processes started side by side
    may list the same arm and fold; unclaimed, the second would remove the first one's run in progress."""
    os.makedirs(model, exist_ok=True)
    # a dot file: nnU-Net looks for fold_* folders only
    with exclusive(os.path.join(model, f".fold_{fold}.lock"), wait=False) as held:
        if not held:
            yield "another study process is training it"
        # a recorded run is finished, also when its curve was lost with its work folder (the report says so):
        # training it again would replace its result in runs.csv
        elif any(run_key(r) == key for r in load_runs(runs_csv)):
            yield "recorded"
        else:
            # a finished fold of another budget would be skipped by nnU-Net: start it anew
            shutil.rmtree(os.path.join(model, f"fold_{fold}"), ignore_errors=True)
            yield None


def format_curve(curve) -> str:
    return " ".join(f"{x:.4f}" for x in curve)


def curve_of(model_dir: str, fold: int):
    """nnU-Net's per-epoch validation pseudo-Dice (foreground mean on validation patches) from the checkpoint."""
    import torch
    ckpt = torch.load(os.path.join(model_dir, f"fold_{fold}", "checkpoint_final.pth"), map_location="cpu",
                      weights_only=False)
    return [float(x) for x in ckpt["logging"]["mean_fg_dice"]]


def machine() -> str:
    import torch
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    return f"{platform.node()} ({dev}, torch {torch.__version__})"


# ------------------------------------------------------------------------------------------------ report

def _mean_std(values, mean=None):
    # mean: the mean of the fold means where given, so that a fold run more often does not weigh more
    return f"{np.mean(values) if mean is None else mean:.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"


def paired(rows, arm, ref):
    """Per (fold, repeat) difference arm - ref, over the pairs both have."""
    a = {(r["fold"], r["repeat"]): float(r["dice_mean"]) for r in rows if r["arm"] == arm}
    b = {(r["fold"], r["repeat"]): float(r["dice_mean"]) for r in rows if r["arm"] == ref}
    keys = sorted(set(a) & set(b))
    return [a[k] - b[k] for k in keys]


def verdict(diffs):
    """A gain only where the mean difference exceeds its spread (the std over folds x repeats)."""
    if len(diffs) < 2:
        return "too few pairs"
    m, s = np.mean(diffs), np.std(diffs, ddof=1)
    if abs(m) <= s:
        return "within spread"
    return "gain" if m > 0 else "loss"


def _diff_cell(diffs):
    if len(diffs) == 1:
        return f"{diffs[0]:+.3f} (1 pair)"
    return f"{np.mean(diffs):+.3f} ± {np.std(diffs, ddof=1):.3f} ({verdict(diffs)})" if diffs else "-"


# The study's first budget keeps the plain folder and report names; every other budget gets its own, so a longer
# run neither restarts the reference runs' folds (nnU-Net would see them as finished) nor overwrites their report.
REFERENCE_BUDGET = (8, 25)


def budget_suffix(epochs, iterations):
    return "" if (int(epochs), int(iterations)) == REFERENCE_BUDGET else f"_e{epochs}x{iterations}"


def results_folder(repeat, epochs, iterations):
    return f"results_rep{repeat}{budget_suffix(epochs, iterations)}"


def fold_mean_curve(fold_curves, folds):
    """The mean over `folds` of each fold's mean curve ([(fold, curve), ...]), cut to the shortest curve."""
    n = min(len(c) for f, c in fold_curves if f in folds)
    return np.mean([np.mean([c[:n] for g, c in fold_curves if g == f], axis=0) for f in folds], axis=0)


def report(out_dir, stem, rows, curves, missing, args_line):
    """<stem>.md and <stem>_curves.png from the runs `rows` (one config, one number of training cases)."""
    if not rows:
        return
    config, n_train, mods = rows[0]["config"], rows[0]["train_cases"], rows[0]["modalities"].split()
    arms = [a for a in ARMS if any(r["arm"] == a for r in rows)]
    folds = sorted({int(r["fold"]) for r in rows})
    budget = sorted({(r["epochs"], r["iterations"]) for r in rows})
    lines = [f"# Recipe study, `{config}`, {n_train} training case(s) per fold: pretrained vs scratch vs nnU-Net's "
             "default on real data", "",
             f"- data: six real BraTS 2018 cases (brats18_dev), {' + '.join(mods)}{' only' * (len(mods) == 1)}, "
             "whole-tumour label, resampled to "
             f"{rows[0]['plans']}; patient-level folds {folds}, each trained on {n_train} case(s) and validated on "
             "2 held-out cases",
             "- score: Dice of nnU-Net's own final validation (sliding-window prediction of each held-out case, "
             "fold_k/validation/summary.json), mean over the fold's cases; an arm's mean is the mean of its fold "
             "means (each fold weighs the same whatever its repeats), its spread the std over folds x repeats",
             f"- budget (epochs, iterations/epoch): {budget}; machine: {rows[0]['machine']}",
             "- command (latest invocation; runs of other invocations with the same budget are included): "
             f"`{args_line}`",
             "- a difference counts as a gain only where the mean paired difference exceeds its spread; with "
             f"{len(folds)} folds that is a weak signal, not a significant result",
             "- 'vs current recipe': a one-factor arm against the arm it changes (pretrained, or scratch for a "
             "scratch arm; adamw, or adamw_scratch, for the AdamW variants; frozen_encoder for its random control), "
             "i.e. the effect of that factor alone", "",
             "| arm | trainer | runs | Dice per fold (mean of repeats) | mean ± std | vs scratch twin | "
             "vs nnU-Net default | vs current recipe | wall time per run |", "|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        fold_means = {f: np.mean(d) for f in folds
                      if (d := [float(r["dice_mean"]) for r in mine if int(r["fold"]) == f])}
        per_fold = [f"{fold_means[f]:.3f}" if f in fold_means else "-" for f in folds]
        spec = ARMS[arm]
        cells = [_diff_cell(paired(rows, arm, ref) if ref else [])
                 for ref in (spec.twin, None if arm == "default" else "default", spec.base)]
        lines.append(f"| {arm} | `{mine[0]['trainer']}` | {len(mine)} | {' '.join(per_fold)} | "
                     f"{_mean_std([float(r['dice_mean']) for r in mine], np.mean(list(fold_means.values())))} | "
                     f"{cells[0]} | {cells[1]} | {cells[2]} | "
                     f"{np.mean([float(r['wall_s']) for r in mine]) / 60:.1f} min |")
    # run-to-run noise: the same arm on the same fold, trained again (nnU-Net does not seed)
    noise = []
    for arm in arms:
        for f in folds:
            d = [float(r["dice_mean"]) for r in rows if r["arm"] == arm and int(r["fold"]) == f]
            if len(d) > 1:
                noise.append((arm, f, d))
    if noise:
        lines += ["", "Run-to-run noise (same arm, same fold, independent runs): "
                  + "; ".join(f"{a} fold {f}: {' '.join(f'{x:.3f}' for x in d)}" for a, f, d in noise)
                  + f"; mean range {np.mean([max(d) - min(d) for _, _, d in noise]):.3f}"]
    if missing:
        lines += ["", f"Curves not available for {len(missing)} run(s) (recorded before runs.csv kept curves, and "
                      f"their work folder is gone), left out of the curves below and of the figure: "
                      + ", ".join(missing)]
    # iterations to reach nnU-Net's default final pseudo-Dice: mean curves over the folds where the default has a
    # curve (folds differ by far more than arms), each fold weighing the same whatever its repeats
    its = int(rows[0]["iterations"])
    ref_folds = sorted({f for f, _ in curves.get("default", [])})
    if ref_folds:
        target = fold_mean_curve(curves["default"], ref_folds)[-1]
        lines += ["", f"Iterations until the mean validation pseudo-Dice over folds {ref_folds} first reaches nnU-Net's "
                      f"default final value there ({target:.3f}):", ""]
        for arm, fc in curves.items():
            lacking = sorted(set(ref_folds) - {f for f, _ in fc})
            if lacking:
                lines.append(f"- {arm}: not measured (no curve on fold{'s' if len(lacking) > 1 else ''} "
                             f"{', '.join(map(str, lacking))})")
                continue
            mean = fold_mean_curve(fc, ref_folds)
            hit = np.nonzero(mean >= target)[0]
            lines.append(f"- {arm}: {(hit[0] + 1) * its if len(hit) else 'not within ' + str(len(mean) * its)}")
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")

    if not curves:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # many arms: bands would hide each other and the legend the curves, so draw means only, the three reference
    # arms bold, the one-factor arms thin in cycling styles, and the legend beside the axes
    many = len(curves) > 8
    fig, ax = plt.subplots(figsize=(10, 5.5) if many else (7, 4.5))
    styles = ["--", ":", "-."]
    for i, (arm, fc) in enumerate(curves.items()):
        cs, folds = [c for _, c in fc], sorted({f for f, _ in fc})
        label = f"{arm} (n={len(cs)}, folds {','.join(map(str, folds))})"
        mean = fold_mean_curve(fc, folds)  # as in the table: each fold weighs the same whatever its repeats
        arr = np.array([c[:len(mean)] for c in cs])
        x = np.arange(1, len(mean) + 1) * its
        if not many:
            ax.plot(x, mean, label=label)
            ax.fill_between(x, arr.min(0), arr.max(0), alpha=0.15)
        elif arm in REFERENCE_ARMS:
            ax.plot(x, mean, label=label, lw=2.5, color="k" if arm == "default" else None)
        else:
            ax.plot(x, mean, label=label, lw=1, ls=styles[i % len(styles)])
    ax.set_xlabel("training iterations")
    ax.set_ylabel("validation pseudo-Dice (nnU-Net, per epoch)")
    epochs, iterations = budget[0]
    inputs = "" if tuple(mods) == MODALITIES else f", {' + '.join(mods)} only"
    ax.set_title(f"{config}{inputs}, {float(rows[0]['spacing']):g} mm ({plans_name(rows[0])}), {n_train} training case(s), "
                 f"{epochs} x {iterations} iterations\n"
                 "mean of fold means" + ("" if many else ", band = min..max over runs"), fontsize=10)
    if many:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"{stem}_curves.png"), dpi=110)


def write_report(args, config, spacing, plans, n_train, name, runs_csv, args_line):
    """The report of one config / number of training cases / spacing / plans / budget, from every recorded run
    (also those of other study processes and machines)."""
    # curves of every finished run of this budget (also those of other study processes)
    rows = [r for r in recorded_runs(runs_csv, args, config, spacing, plans) if int(r["train_cases"]) == n_train]
    # runs.csv keeps every run's curve; runs recorded before it did get theirs from the work folder, if it is
    # still there (it is not committed), and runs.csv is completed with them
    curves, found, missing = {}, {}, []
    for r in rows:
        if r.get("pseudo_dice"):
            curves.setdefault(r["arm"], []).append((int(r["fold"]), [float(x) for x in r["pseudo_dice"].split()]))
            continue
        model = os.path.join(args.work, results_folder(r["repeat"], args.epochs, args.iterations), name,
                             f"{r['trainer']}__{plans}__{config}")
        try:
            found[run_key(r)] = curve_of(model, int(r["fold"]))
            curves.setdefault(r["arm"], []).append((int(r["fold"]), found[run_key(r)]))
        except FileNotFoundError:
            missing.append(f"{r['arm']} fold {r['fold']} repeat {r['repeat']}")
    if found:
        record_run(runs_csv, curves=found)
    stem = ((config if not args.train_cases else f"{config}_train{n_train}")
            + ("" if spacing == DEFAULT_SPACING[config] else f"_{spacing:g}mm")
            + modalities_suffix(args.modalities)
            + ("" if plans == "nnUNetPlans" else f"_{plans[len('nnUNetPlans_'):]}")
            + budget_suffix(args.epochs, args.iterations))
    md = os.path.join(args.out, f"{stem}.md")
    if args.report_only and os.path.isfile(md):
        # the report keeps naming the command that trained the runs, not the one that re-read them
        m = re.search(r"^- command \(latest invocation[^`]*`([^`]*)`", open(md).read(), re.M)
        args_line = m.group(1) if m else args_line
    report(args.out, stem, rows, curves, missing, args_line)
    print(open(md).read())


def study_spacing(args, config) -> float:
    return args.spacing_2d if config == "2d" else args.spacing_3d


def study_plans(args) -> str:
    return f"nnUNetPlans_{args.gpu_memory_target:g}GB" if args.gpu_memory_target else "nnUNetPlans"


def recorded_runs(runs_csv, args, config, spacing, plans):
    """The runs of runs.csv at this config, spacing, plans and budget (every number of training cases)."""
    return [r for r in load_runs(runs_csv) if r["config"] == config and float(r["spacing"]) == spacing
            and r["modalities"] == " ".join(args.modalities) and plans_name(r) == plans
            and int(r["epochs"]) == args.epochs
            and int(r["iterations"]) == args.iterations]


def report_recorded(args, config, runs_csv, args_line):
    """--report-only: the report from runs.csv alone, with the dataset, plans and number of training cases the
    training invocation would have used."""
    spacing, plans = study_spacing(args, config), study_plans(args)
    budget = recorded_runs(runs_csv, args, config, spacing, plans)
    # without --train-cases a fold trains on all its cases (more than any --train-cases allows)
    n_train = args.train_cases or max((int(r["train_cases"]) for r in budget if int(r["train_cases"]) > MAX_SCARCE),
                                      default=0)
    if not any(int(r["train_cases"]) == n_train for r in budget):
        raise SystemExit(f"{runs_csv}: no recorded {config} run at {spacing} mm, plans {plans}, "
                         f"{n_train or 'all'} training case(s), {args.epochs} x {args.iterations} iterations; "
                         "check --configs, --train-cases, --spacing-*, --gpu-memory-target, --epochs, --iterations")
    name = dataset_name(dataset_id(config, args.train_cases, spacing, args.modalities), spacing, args.modalities)
    write_report(args, config, spacing, plans, n_train, name, runs_csv, args_line)


# ------------------------------------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?",
                    help="folder of case_*/ with FLAIR.nii.gz, T1.nii.gz, GT_W.nii.gz (brats18_dev)")
    ap.add_argument("--configs", nargs="+", default=["2d"], choices=list(DATASET_IDS))
    ap.add_argument("--arms", nargs="+", default=["pretrained", "scratch", "default"], choices=list(ARMS))
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n-folds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--train-cases", type=int, default=None, choices=range(1, MAX_SCARCE + 1), metavar="K",
                    help="train each fold on only K (1-3) of its 4 training cases (data scarcity); a dataset of its "
                         "own (same data and spacing, re-planned identically), reported as <config>_train<K>.md")
    ap.add_argument("--epochs", type=int, default=10,
                    help="with --iterations the budget; any other than 8 x 25 gets work folders and a report of "
                         "its own (<stem>_e<E>x<I>.md)")
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--val-iterations", type=int, default=10)
    ap.add_argument("--spacing-2d", type=float, default=DEFAULT_SPACING["2d"],
                    help="mm (1 = native BraTS); any other than the default gets a dataset, runs and a report of its "
                         "own (<stem>_<S>mm.md)")
    ap.add_argument("--spacing-3d", type=float, default=DEFAULT_SPACING["3d_fullres"])
    ap.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=MODALITIES,
                    help="input channels (default FLAIR T1); T1 alone, where the whole tumour is far less visible "
                         "than in FLAIR, asks whether ImageNet features help where intensity alone does not do; "
                         "a dataset, runs and a report of its own (<stem>_<modalities>.md)")
    ap.add_argument("--gpu-memory-target", type=float, default=None,
                    help="plan with nnUNetv2_plan_experiment -gpu_memory_target X (GB): smaller batches, then smaller "
                         "patches, than nnU-Net's 8 GB plan; own runs and report (<stem>_<X>GB.md)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads per training (nnUNetv2_train on CPU takes every core; when other jobs share "
                         "the machine, oversubscribed threads run many times slower: use 1 there)")
    ap.add_argument("--work", default=os.path.join(REPO, ".recipe_work"),
                    help="nnU-Net folders of the study (raw, preprocessed, results; not committed)")
    ap.add_argument("--out", default=os.path.join(HERE, "reports"), help="the reports (<stem>.md, <stem>_curves.png)")
    ap.add_argument("--runs", default=os.path.join(HERE, "runs.csv"), help="every recorded run, one row each")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: rewrite the report of --configs / --train-cases / spacing / plans / budget "
                         "from the runs recorded in runs.csv (no data needed; --arms, --folds, --repeats ignored)")
    args = ap.parse_args()
    if not args.data and not args.report_only:
        ap.error("the data folder is needed (only --report-only works without it)")
    args.modalities = [m for m in MODALITIES if m in args.modalities]  # one order: one dataset per subset

    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"), nnUNet_def_n_proc="2",
               nnUNet_compile="f", nnUNet_xdim_epochs=str(args.epochs), nnUNet_xdim_iterations=str(args.iterations),
               nnUNet_xdim_val_iterations=str(args.val_iterations))
    for k in ("raw", "preprocessed"):
        env[f"nnUNet_{k}"] = os.path.join(args.work, k)
        os.makedirs(env[f"nnUNet_{k}"], exist_ok=True)
    env.pop("nnUNet_n_proc_DA", None)  # nnU-Net 2.8.1's planner crashes with 0
    add_study_trainers(env)
    log = os.path.join(args.work, "commands.log")
    runs_csv = args.runs
    args_line = "python results/recipe_study/recipe_study.py <brats18_dev> " + " ".join(sys.argv[2:])
    if args.report_only:
        for config in args.configs:
            report_recorded(args, config, runs_csv, args_line)
        return

    for config in args.configs:
        spacing = study_spacing(args, config)
        did = dataset_id(config, args.train_cases, spacing, args.modalities)
        with exclusive(os.path.join(args.work, f"dataset{did}.lock")):
            raw = make_dataset(args.data, env["nnUNet_raw"], did, spacing, args.modalities)
            name = os.path.basename(raw)
            pre = os.path.join(env["nnUNet_preprocessed"], name)
            plans = study_plans(args)
            if not os.path.isfile(os.path.join(pre, plans + ".json")):
                run(["nnUNetv2_extract_fingerprint", "-d", str(did), "-np", "2"], env, log)
                if args.gpu_memory_target:
                    run(["nnUNetv2_plan_experiment", "-d", str(did), "-gpu_memory_target", str(args.gpu_memory_target),
                         "-overwrite_plans_name", plans], env, log)
                else:
                    run(["nnUNetv2_plan_experiment", "-d", str(did)], env, log)
            cases = sorted(f[:-len(".nii.gz")] for f in os.listdir(os.path.join(raw, "labelsTr")))
            plan = json.load(open(os.path.join(pre, plans + ".json")))["configurations"][config]
            data_dir = os.path.join(pre, plan["data_identifier"])
            missing = missing_preprocessed_cases(data_dir, cases)
            if missing:
                if os.path.isdir(data_dir):
                    print(f"{data_dir}: {len(missing)} of {len(cases)} cases not preprocessed ({', '.join(missing)}), "
                          "an earlier preparation was interrupted; preprocessing again", flush=True)
                # nnU-Net's preprocessing removes the folder first, so a rerun starts clean
                run(["nnUNetv2_preprocess", "-d", str(did), "-c", config, "-plans_name", plans, "-np", "2"], env, log)
                missing = missing_preprocessed_cases(data_dir, cases)
                if missing:
                    raise SystemExit(f"{data_dir}: nnUNetv2_preprocess left cases {missing} without arrays; "
                                     f"see {log}")
            splits = make_splits(cases, args.n_folds, args.train_cases)
            write_splits(pre, splits)
        n_train = len(splits[args.folds[0]]["train"])
        plans_desc = (f"{spacing} mm, plans {plans}: patch {plan['patch_size']}, batch {plan['batch_size']}, "
                      f"{len(plan['architecture']['arch_kwargs']['strides'])} stages")

        for repeat in range(args.repeats):
            results = os.path.join(args.work, results_folder(repeat, args.epochs, args.iterations))
            os.makedirs(results, exist_ok=True)
            for arm in args.arms:
                trainer = ARMS[arm]
                model = os.path.join(results, name, f"{trainer}__{plans}__{config}")
                for fold in args.folds:
                    key = run_key(dict(config=config, spacing=spacing, modalities=" ".join(args.modalities),
                                       plans=plans_desc, arm=arm, fold=fold,
                                       repeat=repeat, train_cases=n_train, epochs=args.epochs,
                                       iterations=args.iterations))
                    summary = os.path.join(model, f"fold_{fold}", "validation", "summary.json")
                    with fold_to_train(model, fold, key, runs_csv) as skip:
                        if skip:
                            if skip != "recorded":
                                print(f"{config} {arm} fold {fold} repeat {repeat}: skipped, {skip}", flush=True)
                            continue
                        started = time.time()
                        print(f"[{time.strftime('%H:%M:%S')}] {config} {arm} fold {fold} repeat {repeat}, "
                              f"{n_train} training case(s)", flush=True)
                        run(train_command(args.threads) + [str(did), config, str(fold), "-tr", trainer, "-p", plans,
                                                           "-device", args.device],
                            dict(env, nnUNet_results=results, nnUNet_n_proc_DA="0"), log)
                        wall = time.time() - started
                        s = json.load(open(summary))
                        per_case = [c["metrics"]["1"]["Dice"] for c in s["metric_per_case"]]
                        record_run(runs_csv, dict(
                            config=config, spacing=spacing, modalities=" ".join(args.modalities), arm=arm,
                            trainer=trainer, plans=plans_desc, fold=fold, repeat=repeat, train_cases=n_train,
                            epochs=args.epochs, iterations=args.iterations, dice_mean=f"{np.mean(per_case):.4f}",
                            dice_per_case=" ".join(f"{d:.4f}" for d in per_case), wall_s=f"{wall:.0f}",
                            device=args.device, machine=machine(), finished=time.strftime("%Y-%m-%d %H:%M"),
                            pseudo_dice=format_curve(curve_of(model, fold))))
                        print(f"    Dice {np.round(per_case, 3)} in {wall / 60:.1f} min", flush=True)

        write_report(args, config, spacing, plans, n_train, name, runs_csv, args_line)

if __name__ == "__main__":
    main()
