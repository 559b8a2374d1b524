"""Reports: the per-case CSV, the Markdown summary and the box-plot figure."""
import csv
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from nnunetv2_xdim.evaluation.challenges import Preset
from nnunetv2_xdim.evaluation.metrics import HIGHER_IS_BETTER, METRICS, UNITS, VOLUMES

_DEFINITIONS = (
    "dice: 2|P∩R|/(|P|+|R|). hd: Hausdorff distance, the largest surface distance in either direction. "
    "hd95: the larger of the two directed 95th percentiles of the surface distances, each surface voxel weighted "
    "equally (MONAI's definition). assd: mean of all surface distances of both directions pooled. ravd: "
    "|V_P - V_R| / V_R × 100. Distances in mm between the centres of face-connected border voxels, with the "
    "images' voxel spacing; volumes in mm³ (mm² for 2D images)."
)


def reported_metrics(preset: Preset) -> Tuple[str, ...]:
    return METRICS + (("points",) if preset.name == "chaos" else ())


def case_columns(preset: Preset, extra: Sequence[str] = ()) -> List[str]:
    return ["run", "fold", "case", "structure", *preset.group_columns, *METRICS, *VOLUMES, *extra, "prediction"]


def _csv_value(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def write_csv(rows: List[Dict], columns: Sequence[str], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row.get(c, "")) for c in columns])


def describe(values: Iterable[float]) -> Dict[str, float]:
    """n (defined values), n_undefined (NaN), mean, std (sample), median."""
    values = np.asarray(list(values), dtype=float)
    defined = values[~np.isnan(values)]
    n = len(defined)
    return {"n": n, "n_undefined": len(values) - n,
            "mean": float(defined.mean()) if n else np.nan,
            "std": float(defined.std(ddof=1)) if n > 1 else np.nan,
            "median": float(np.median(defined)) if n else np.nan}


def _fmt(value: float, metric: str) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.4f}" if metric == "dice" else f"{value:.2f}"


def _cell(stats: Dict[str, float], metric: str) -> str:
    if stats["n"] == 0:
        return "–" + (f" [{stats['n_undefined']} undefined]" if stats["n_undefined"] else "")
    text = f"{_fmt(stats['mean'], metric)} ± {_fmt(stats['std'], metric)} ({_fmt(stats['median'], metric)})"
    return text + (f" [{stats['n_undefined']} undefined]" if stats["n_undefined"] else "")


def _table(header: Sequence[str], body: List[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return lines + [""]


def _metric_title(metric: str, preset: Preset) -> str:
    title = "CHAOS points" if metric == "points" else metric
    if metric in preset.aliases:
        title += f" ({preset.name.split()[0].upper()}: {preset.aliases[metric]})"
    unit = UNITS.get(metric, "")
    return title + (f" [{unit}]" if unit else "")


def _metric_tables(rows: List[Dict], run_names: List[str], preset: Preset, metrics: Sequence[str],
                   group_columns: Sequence[str]) -> List[str]:
    lines = []
    keys = list(dict.fromkeys((r["structure"], *(r[g] for g in group_columns)) for r in rows))
    for metric in metrics:
        lines += [f"### {_metric_title(metric, preset)}", ""]
        body = []
        for key in keys:
            selected = [r for r in rows if (r["structure"], *(r[g] for g in group_columns)) == key]
            body.append([*key, *(_cell(describe(r[metric] for r in selected if r["run"] == run), metric)
                                 for run in run_names)])
        lines += _table(["structure", *group_columns, *run_names], body)
    return lines


def _paired_comparison(rows: List[Dict], run_names: List[str], metrics: Sequence[str]) -> List[str]:
    from scipy.stats import wilcoxon

    baseline = run_names[0]
    values = {(r["run"], r["structure"], r["case"]): r for r in rows}
    structures = list(dict.fromkeys(r["structure"] for r in rows))
    body = []
    for run in run_names[1:]:
        for structure in structures:
            for metric in metrics:
                pairs = [(values[(run, structure, case)][metric], values[(baseline, structure, case)][metric])
                         for (r, s, case) in values if r == run and s == structure
                         and (baseline, structure, case) in values]
                diffs = np.array([a - b for a, b in pairs if not (math.isnan(a) or math.isnan(b))])
                if len(diffs) == 0:
                    continue
                if np.all(diffs == 0):
                    p = 1.0
                else:
                    # Exact p-values only without ties or zeros (scipy otherwise resamples, which is slow).
                    exact = len(diffs) <= 50 and np.all(diffs != 0) and len(np.unique(np.abs(diffs))) == len(diffs)
                    try:
                        p = float(wilcoxon(diffs, method="exact" if exact else "approx").pvalue)
                    except ValueError:
                        p = np.nan
                better = "higher" if HIGHER_IS_BETTER.get(metric, True) else "lower"
                body.append([run, structure, metric, len(diffs), _fmt(float(diffs.mean()), metric),
                             _fmt(float(np.median(diffs)), metric), "–" if math.isnan(p) else f"{p:.3g}", better])
    if not body:
        return []
    return [f"## Paired comparison with `{baseline}`", "",
            f"Differences run − `{baseline}` over the cases both runs predicted; p: two-sided Wilcoxon signed-rank "
            f"test (no correction for multiple comparisons).", "",
            *_table(["run", "structure", "metric", "n", "mean difference", "median difference", "p",
                     "better is"], body)]


def write_markdown(path: str, rows: List[Dict], runs, reference_folder: str, preset: Preset,
                   metrics: Sequence[str], figure_name: str, chaos_tasks: Optional[List[Dict]] = None,
                   camus_tables: Optional[List[Dict]] = None) -> None:
    run_names = [r.name for r in runs]
    lines = [f"# Evaluation report: {preset.name}", "",
             f"Reference: `{reference_folder}`", ""]
    lines += _table(["run", "source", "folds", "cases"],
                    [[r.name, f"`{r.source}`", ", ".join(r.folds) or "–", len(r.cases)] for r in runs])
    lines += [f"**Empty masks.** {preset.convention_text}", "", f"**Metrics.** {_DEFINITIONS}", "",
              "Cells: mean ± standard deviation (median) over cases; undefined values are not averaged and are "
              "counted in brackets.", "", f"![box plots]({figure_name})", "",
              "## Per structure", ""]
    lines += _metric_tables(rows, run_names, preset, metrics, ())
    if preset.group_columns:
        lines += [f"## Per {' and '.join(preset.group_columns)}", ""]
        lines += _metric_tables(rows, run_names, preset, metrics, preset.group_columns)
    if len(run_names) > 1:
        lines += _paired_comparison(rows, run_names, metrics)
    if chaos_tasks:
        lines += _chaos_section(chaos_tasks, run_names)
    if camus_tables is not None:
        lines += _camus_section(camus_tables)
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _chaos_section(tasks: List[Dict], run_names: List[str]) -> List[str]:
    names = list(dict.fromkeys(t["name"] for t in tasks))
    body = []
    for name in names:
        cells = []
        for run in run_names:
            match = [t for t in tasks if t["name"] == name and t["run"] == run]
            cells.append(f"{match[0]['mean']:.2f} ± {match[0]['std']:.2f} (n={match[0]['n']})" if match else "–")
        body.append([name, *cells])
    return ["## CHAOS points score", "",
            "Each metric mapped onto 0-100 points as the CHAOS organisers define it (CHAOS_Metrics_and_Evaluation_"
            "Method.pdf, section 2, eqs. 6-9): DICE scores 100 × DICE from 0.8 up and 0 below; RAVD, ASSD and "
            "MSSD score 100 − value / threshold × 100 up to 5 %, 15 mm and 60 mm and 0 beyond. Points are averaged "
            "per organ; a task's score is the mean over its cases of the case's mean organ points. Cells: mean ± "
            "standard deviation over cases (or case-organ pairs per organ).", "",
            *_table(["organ / task", *run_names], body)]


def _camus_section(tables: List[Dict]) -> List[str]:
    lines = ["## CAMUS clinical indices", "",
             "LV end-diastolic and end-systolic volumes (ml) and ejection fraction (%) by the biplane method of "
             "disks (Simpson's rule, 20 disks) from the 2CH and 4CH ED/ES segmentations. pred: from the "
             "predictions; ref: from the reference masks; info: the LVedv/LVesv/LVef values of the release's "
             "Info_*.cfg files. bias = mean(first − second); LoA: 95 % limits of agreement (bias ± 1.96 sd).", ""]
    if not tables:
        return lines + ["No patient had both views at ED and ES.", ""]
    body = [[t["run"], t["index"], t["comparison"], t["n"], _fmt(t["corr"], "dice"), _fmt(t["bias"], ""),
             _fmt(t["sd"], ""), f"[{_fmt(t['loa_low'], '')}, {_fmt(t['loa_high'], '')}]", _fmt(t["mae"], "")]
            for t in tables]
    return lines + _table(["run", "index", "comparison", "n", "corr", "bias", "sd", "LoA", "MAE"], body)


def plot_boxplots(path: str, rows: List[Dict], run_names: List[str], preset: Preset,
                  metrics: Sequence[str]) -> None:
    """One panel per metric (rows) and structure (columns), one coloured box per run (legend below)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    structures = list(dict.fromkeys(r["structure"] for r in rows))
    colours = [plt.get_cmap("tab10")(i % 10) for i in range(len(run_names))]
    legend_height = 0.3 * len(run_names) + 0.3
    fig, axes = plt.subplots(len(metrics), len(structures), squeeze=False,
                             figsize=(max(2.0 + 0.45 * len(run_names), 3.0) * len(structures),
                                      2.4 * len(metrics) + legend_height))
    for i, metric in enumerate(metrics):
        for j, structure in enumerate(structures):
            ax = axes[i, j]
            data = []
            for run in run_names:
                values = np.array([r[metric] for r in rows if r["run"] == run and r["structure"] == structure],
                                  dtype=float)
                data.append(values[~np.isnan(values)])
            if any(len(d) for d in data):
                boxes = ax.boxplot([d if len(d) else [np.nan] for d in data], showmeans=True, patch_artist=True,
                                   medianprops={"color": "black"})
                for box, colour in zip(boxes["boxes"], colours):
                    box.set_facecolor(colour)
            else:
                ax.text(0.5, 0.5, "no defined values", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            if i == 0:
                ax.set_title(structure)
            if j == 0:
                ax.set_ylabel(_metric_title(metric, preset), fontsize=8)
            ax.grid(axis="y", alpha=0.3)
    fig.legend([Patch(facecolor=c) for c in colours], run_names, loc="lower center", ncol=1, fontsize=8,
               frameon=False)
    fig.suptitle(f"{preset.name}: per-case values (triangle: mean)", fontsize=10)
    fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
