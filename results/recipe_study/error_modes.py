"""How the recipe study's networks get a case wrong: over- or under-segmentation.

Reads nnU-Net's final validation predictions (fold_k/validation/*.nii.gz) of every finished study run at K
training cases (datasets of `recipe_study.py --train-cases K`, default 1; every spacing and plans) and compares
them with the preprocessed ground truth: predicted / true tumour volume, precision and recall per validation
case. Dice alone does not say whether a network misses tumour or adds some; with one training case the answer
depends on the tumour of that case, and it is the same for every arm.

    python results/recipe_study/error_modes.py [--work .recipe_work] [--arms pretrained scratch default] \\
        [--train-cases K]
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
import SimpleITK as sitk

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
from results.recipe_study.arms import ARMS  # noqa: E402
from results.recipe_study.recipe_study import DEFAULT_SPACING, dataset_id  # noqa: E402


def _voxels(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(path)) == 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(REPO, ".recipe_work"))
    ap.add_argument("--arms", nargs="+", default=["pretrained", "scratch", "default"], choices=list(ARMS))
    ap.add_argument("--spacings", nargs="+", type=float, default=[DEFAULT_SPACING["2d"], 1.0])
    ap.add_argument("--train-cases", type=int, default=1, help="datasets of recipe_study.py --train-cases K")
    ap.add_argument("--out", help="default: reports/2d_train<K>_error_modes.md")
    args = ap.parse_args()
    k = args.train_cases
    out = args.out or os.path.join(HERE, "reports", f"2d_train{k}_error_modes.md")

    lines = [f"# Recipe study, 2d at {k} training case(s): how the validation cases are missed", "",
             f"`python results/recipe_study/error_modes.py --arms {' '.join(args.arms)} --spacings "
             f"{' '.join(f'{s:g}' for s in args.spacings)} --train-cases {k}`", "",
             "Per validation case: predicted / true tumour volume (vol), precision (prec) and recall (rec) of "
             "nnU-Net's final sliding-window validation prediction. Tumour sizes are the preprocessed ground "
             "truth's voxel counts.", ""]
    for spacing in args.spacings:
        did = dataset_id("2d", k, spacing)
        pre = glob.glob(os.path.join(args.work, "preprocessed", f"Dataset{did}_*"))
        if not pre:
            print(f"no dataset {did} ({spacing:g} mm) under {args.work}: skipped")
            continue
        pre, name = pre[0], os.path.basename(pre[0])
        gt_dir = os.path.join(pre, "gt_segmentations")
        splits = json.load(open(os.path.join(pre, "splits_final.json")))
        size = {f[:-len(".nii.gz")]: int(_voxels(os.path.join(gt_dir, f)).sum()) for f in sorted(os.listdir(gt_dir))}
        lines += [f"## {spacing:g} mm ({name})", "",
                  "tumour voxels: " + ", ".join(f"{c} {n}" for c, n in size.items()), "",
                  "| fold (train cases -> validation cases) | arm | plans | run (repeat[_budget]; 8 x 25 unless named) "
                  "| per validation case: vol, prec, rec |",
                  "|---|---|---|---|---|"]
        for fold, split in enumerate(splits):
            for arm in args.arms:
                pattern = os.path.join(args.work, "results_rep*", name, f"{ARMS[arm].trainer}__*__2d", f"fold_{fold}",
                                       "validation")
                for val in sorted(glob.glob(pattern)):
                    if not os.path.isfile(os.path.join(val, "summary.json")):
                        continue  # unfinished
                    repeat = val.split(os.sep + "results_rep")[1].split(os.sep)[0]
                    plans = val.split(f"{ARMS[arm].trainer}__")[1].split("__2d")[0]
                    cells = []
                    for case in split["val"]:
                        p, g = _voxels(os.path.join(val, case + ".nii.gz")), _voxels(os.path.join(gt_dir,
                                                                                                    case + ".nii.gz"))
                        tp = np.logical_and(p, g).sum()
                        cells.append(f"{case}: vol {p.sum() / g.sum():.2f}, prec {tp / max(p.sum(), 1):.2f}, "
                                     f"rec {tp / g.sum():.2f}")
                    lines.append(f"| {fold} ({', '.join(split['train'])} -> {', '.join(split['val'])}) | {arm} | "
                                 f"{plans} | {repeat} | {'; '.join(cells)} |")
        lines.append("")
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
