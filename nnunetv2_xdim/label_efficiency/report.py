"""The study's outputs from its run records: runs.csv (one row per run), cases.csv (one row per run and test
case), summary.md (per N: mean and spread over repeats, paired differences, label efficiency) and a figure."""
import csv
import glob
import json
import math
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

RUN_COLUMNS = ["dataset", "configuration", "trainer", "plans", "n", "repeat", "fold", "epochs", "iterations",
               "val_iterations", "tta", "device", "machine", "train_s", "train_time", "predict_s", "finished",
               "n_test", "n_test_foreground", "n_test_empty", "dice_mean", "hd95_mean", "assd_mean",
               "false_positive_rate_empty", "dice_per_case"]
BASELINE = "nnUNetTrainerXDimBaseline"


def load_records(runs_folder: str) -> List[dict]:
    records = []
    for path in sorted(glob.glob(os.path.join(runs_folder, "*", "fold_*.json"))):
        with open(path) as f:
            records.append(json.load(f))
    return sorted(records, key=lambda r: (r["n"], r["repeat"], r["trainer"], r["plans"]))


def arm_key(r: dict) -> Tuple[str, str]:
    return r["trainer"], r["plans"]


def arm_label(key: Tuple[str, str], default_plans: str) -> str:
    trainer, plans = key
    short = trainer.replace("nnUNetTrainerXDim", "").replace("nnUNetTrainer", "") or trainer
    short = "nnU-Net default" if short == "Baseline" else short
    return short if plans == default_plans else f"{short} ({plans.replace(default_plans, '').strip('_') or plans})"


def _fmt(v, digits=3) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def write_csvs(records: Sequence[dict], folder: str) -> Dict[str, str]:
    paths = {"runs": os.path.join(folder, "runs.csv"), "cases": os.path.join(folder, "cases.csv")}
    with open(paths["runs"], "w", newline="") as f:
        w = csv.DictWriter(f, RUN_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            per_case = ";".join(f"{c['case']}={_fmt(c['dice'], 4)}" for c in r["cases"])
            w.writerow({**{k: r.get(k) for k in RUN_COLUMNS}, "dice_per_case": per_case,
                        **{k: _fmt(r.get(k), 4) for k in ("dice_mean", "hd95_mean", "assd_mean",
                                                          "false_positive_rate_empty")}})
    case_columns = ["trainer", "plans", "n", "repeat", "fold"] + \
        sorted({k for r in records for c in r["cases"] for k in c}, key=lambda k: (k != "case", k))
    with open(paths["cases"], "w", newline="") as f:
        w = csv.DictWriter(f, case_columns, extrasaction="ignore")
        w.writeheader()
        for r in records:
            for c in r["cases"]:
                w.writerow({**{k: r[k] for k in ("trainer", "plans", "n", "repeat", "fold")}, **c})
    return paths


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value: one run has no spread to show)."""
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def by_arm(records: Sequence[dict], metric: str = "dice_mean") -> Dict[Tuple[str, str], Dict[int, Dict[int, float]]]:
    """arm -> N -> repeat -> the run's metric."""
    table: Dict[Tuple[str, str], Dict[int, Dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r.get(metric) is not None:
            table[arm_key(r)][r["n"]][r["repeat"]] = r[metric]
    return table


def paired(table, arm, ref) -> Dict[int, List[float]]:
    """N -> the differences arm - ref over the repeats both have (same training cases)."""
    out = {}
    for n, runs in table.get(arm, {}).items():
        diffs = [runs[k] - table[ref][n][k] for k in sorted(runs) if k in table.get(ref, {}).get(n, {})]
        if diffs:
            out[n] = diffs
    return out


def twin_key(key: Tuple[str, str], keys) -> Optional[Tuple[str, str]]:
    trainer, plans = key
    if not trainer.startswith("nnUNetTrainerXDim") or trainer == BASELINE:
        return None
    other = trainer[:-len("_Scratch")] if trainer.endswith("_Scratch") else trainer + "_Scratch"
    return (other, plans) if (other, plans) in keys else None


def label_efficiency(table, arm, ref) -> str:
    """The smallest N whose mean reaches the reference's mean at the reference's largest N."""
    if not table.get(ref):
        return ""
    target = mean_std(list(table[ref][max(table[ref])].values()))[0]
    for n in sorted(table[arm]):
        if mean_std(list(table[arm][n].values()))[0] >= target:
            return str(n)
    return f"> {max(table[arm])}"


def summary_markdown(records: Sequence[dict], default_plans: str, gain: float, title: str) -> str:
    table = by_arm(records)
    keys = sorted(table, key=lambda k: (k[0] == BASELINE, k[0].endswith("_Scratch"), k))
    sizes = sorted({r["n"] for r in records})
    ref = (BASELINE, default_plans) if (BASELINE, default_plans) in table else None
    r0 = records[0]
    lines = [f"# {title}", "",
             f"{r0['dataset']}, `{r0['configuration']}`; budget {r0['epochs']} epochs x {r0['iterations']} iterations "
             f"(+{r0['val_iterations']} validation iterations per epoch); test-time mirroring "
             f"{'on' if r0['tta'] else 'off'} for every arm; {r0['n_test']} test cases "
             f"({r0['n_test_foreground']} with foreground, {r0['n_test_empty']} empty); machine {r0['machine']}.", "",
             "Dice on the test cases with foreground, mean ± std over repeats (repeats), per number of training "
             "cases N:", "",
             "| arm | " + " | ".join(f"N = {n}" for n in sizes) + " | label efficiency |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for k in keys:
        cells = []
        for n in sizes:
            runs = table[k].get(n, {})
            m, s = mean_std(list(runs.values())) if runs else (None, None)
            cells.append(f"{m:.3f} ± {s:.3f} ({len(runs)})" if runs else "")
        lines.append(f"| {arm_label(k, default_plans)} | " + " | ".join(cells) + " | "
                     + (label_efficiency(table, k, ref) if ref else "") + " |")
    if ref:
        lines += ["", f"Label efficiency: the smallest N whose mean reaches nnU-Net default's mean at its largest N "
                      f"({max(table[ref])})."]
    # every arm but the reference and the scratch twins, against its twin and against nnU-Net's default
    comparisons = []
    for k in keys:
        if k == ref or k[0].endswith("_Scratch"):
            continue
        comparisons += [(k, other) for other in (twin_key(k, table), ref) if other]
    if comparisons:
        lines += ["", f"Paired differences in Dice (same training cases), mean ± std over repeats; **gain** where "
                      f"mean - std >= {gain:g}, **loss** where mean + std <= -{gain:g} (never with a single pair):", "",
                  "| arm | against | " + " | ".join(f"N = {n}" for n in sizes) + " |",
                  "|---|---|" + "---|" * len(sizes)]
        for k, other in comparisons:
            diffs = paired(table, k, other)
            cells = []
            for n in sizes:
                if n not in diffs:
                    cells.append("")
                    continue
                m, s = mean_std(diffs[n])
                # one pair has no spread: it is shown, never called a gain or a loss
                verdict = "" if len(diffs[n]) < 2 else \
                    " **gain**" if m - s >= gain else (" **loss**" if m + s <= -gain else "")
                cells.append(f"{m:+.3f} ± {s:.3f} ({len(diffs[n])}){verdict}")
            lines.append(f"| {arm_label(k, default_plans)} | {arm_label(other, default_plans)} | "
                         + " | ".join(cells) + " |")
    fp = by_arm(records, "false_positive_rate_empty")
    if fp:
        lines += ["", "False-positive rate on the test cases with an empty reference (share of them with any "
                      "predicted foreground), mean over repeats:", "",
                  "| arm | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for k in keys:
            cells = [f"{mean_std(list(fp[k][n].values()))[0]:.3f}" if fp.get(k, {}).get(n) else "" for n in sizes]
            lines.append(f"| {arm_label(k, default_plans)} | " + " | ".join(cells) + " |")
    times = defaultdict(list)
    for r in records:
        if r.get("train_s"):
            times[arm_key(r)].append(r["train_s"])
    lines += ["", "Training time per run (mean, minutes): " + "; ".join(
        f"{arm_label(k, default_plans)} {np.mean(v) / 60:.1f}" for k, v in sorted(times.items())) + "."]
    return "\n".join(lines) + "\n"


def plot(records: Sequence[dict], default_plans: str, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = by_arm(records)
    fp = by_arm(records, "false_positive_rate_empty")
    panels = [("Dice (test cases with foreground)", table)] + ([("false-positive rate (empty test cases)", fp)]
                                                               if fp else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (ylabel, t) in zip(axes[0], panels):
        for i, key in enumerate(sorted(t)):
            sizes = sorted(t[key])
            stats = [mean_std(list(t[key][n].values())) for n in sizes]
            label = arm_label(key, default_plans)
            line = ax.errorbar(sizes, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
                               label=label)
            for n in sizes:
                ax.scatter([n] * len(t[key][n]), list(t[key][n].values()), s=10, alpha=0.5,
                           color=line[0].get_color())
        ax.set_xscale("log")
        xs = sorted({n for k in t for n in t[k]})
        ax.set_xticks(xs)
        ax.set_xticklabels([str(n) for n in xs])
        ax.set_xlabel("training cases N")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(records: Sequence[dict], folder: str, default_plans: str, gain: float) -> Dict[str, str]:
    if not records:
        return {}
    r0 = records[0]
    title = (f"Label efficiency: {r0['dataset']} {r0['configuration']}, {r0['epochs']} x {r0['iterations']} "
             f"iterations")
    paths = write_csvs(records, folder)
    paths["summary"] = os.path.join(folder, "summary.md")
    with open(paths["summary"], "w") as f:
        f.write(summary_markdown(records, default_plans, gain, title))
    paths["figure"] = os.path.join(folder, "dice_vs_n.png")
    plot(records, default_plans, paths["figure"], title)
    return paths
