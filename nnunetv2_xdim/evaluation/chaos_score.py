"""The CHAOS points score: each metric mapped onto 0-100 points, averaged per organ, case and task.

Source of the rule: the organisers' document CHAOS_Metrics_and_Evaluation_Method.pdf in their public repository
github.com/emrekavur/CHAOS-evaluation, section 2, equations 6-9 (the scoring of Kavur et al., "CHAOS Challenge -
combined (CT-MR) healthy abdominal organ segmentation", Medical Image Analysis 69 (2021) 101950). The metric
definitions follow that repository's Python/CHAOSmetrics.py (DICE; RAVD in percent; ASSD and MSSD in mm over
face-connected border voxels, pooled for ASSD). Each metric has a threshold set from the inter-annotator
variability; a value beyond it scores 0 points:
    eq. 6  DICE:  0 below 0.8, else 100 x DICE           (DICE 0.9 -> 90 points, 0.8 -> 80, 1 -> 100)
    eq. 7  RAVD:  100 - RAVD / 5 % x 100, 0 above 5 %
    eq. 8  ASSD:  100 - ASSD / 15 mm x 100, 0 above 15 mm
    eq. 9  MSSD:  100 - MSSD / 60 mm x 100, 0 above 60 mm
DICE thus jumps from 0 to 80 points at its threshold, while the three distances fall linearly to 0 at theirs.
An organ's score in a case is the mean of its four metric scores; a missed organ scores 0.
"""
from typing import Dict, List

import numpy as np

# metric column -> threshold: DICE scores from it up (eq. 6), the distances up to it (eqs. 7-9). "hd" is MSSD.
THRESHOLDS = {"dice": 0.8, "ravd": 5.0, "assd": 15.0, "hd": 60.0}
POINT_COLUMNS = ("points_dice", "points_ravd", "points_assd", "points_mssd", "points")
_POINT_NAMES = {"dice": "points_dice", "ravd": "points_ravd", "assd": "points_assd", "hd": "points_mssd"}


def metric_points(metric: str, value: float) -> float:
    """0-100 points for one metric value (section 2, eqs. 6-9); an undefined value (NaN) scores 0."""
    threshold = THRESHOLDS[metric]
    if value is None or np.isnan(value):
        return 0.0
    if metric == "dice":
        points = 100.0 * value if value >= threshold else 0.0
    else:
        points = 100.0 - value / threshold * 100.0 if value <= threshold else 0.0
    # Adding +0.0 turns a -0.0 (from rounding at a threshold) into 0.0, so that "-0.0" never reaches a report.
    return float(np.clip(points, 0.0, 100.0)) + 0.0


def add_points(row: Dict) -> None:
    """Adds the CHAOS points columns to one (case, organ) row; organs absent from the reference get NaN."""
    if not row["ref_volume"] > 0:
        row.update({c: np.nan for c in POINT_COLUMNS})
        return
    missed = row["pred_volume"] == 0
    for metric, column in _POINT_NAMES.items():
        row[column] = 0.0 if missed else metric_points(metric, row[metric])
    row["points"] = float(np.mean([row[c] for c in _POINT_NAMES.values()]))


def task_scores(rows: List[Dict]) -> List[Dict]:
    """Leaderboard figures per run: per organ and modality, and the CHAOS tasks the data allow.

    A task's score is the mean over its cases of the case score, the mean points of the task's organs that the
    case's reference annotates (tasks 1-3: liver; tasks 4-5: all organs; CT annotates the liver only).
    """
    results = []
    for run in dict.fromkeys(r["run"] for r in rows):
        run_rows = [r for r in rows if r["run"] == run and not np.isnan(r["points"])]
        modalities = sorted({r["modality"] for r in run_rows})
        for organ in dict.fromkeys(r["structure"] for r in run_rows):
            for modality in modalities:
                _append(results, run, f"{organ} ({modality})",
                        [r for r in run_rows if r["structure"] == organ and r["modality"] == modality])
        tasks = []
        if modalities == ["CT", "MR"]:
            tasks += [("Task 1: liver, CT+MR", lambda r: is_liver(r)),
                      ("Task 4: all organs, CT+MR", lambda r: True)]
        if "CT" in modalities:
            tasks.append(("Task 2: liver, CT", lambda r: is_liver(r) and r["modality"] == "CT"))
        if "MR" in modalities:
            tasks += [("Task 3: liver, MR", lambda r: is_liver(r) and r["modality"] == "MR"),
                      ("Task 5: all organs, MR", lambda r: r["modality"] == "MR")]
        if "unknown" in modalities:
            tasks += [("liver, all cases", lambda r: is_liver(r)), ("all organs, all cases", lambda r: True)]
        for name, selects in tasks:
            _append(results, run, name, [r for r in run_rows if selects(r)], per_case=True)
    return results


def is_liver(row: Dict) -> bool:
    return "liver" in row["structure"].lower()


def _append(results: List[Dict], run: str, name: str, rows: List[Dict], per_case: bool = False) -> None:
    if not rows:
        return
    if per_case:
        by_case: Dict[tuple, List[float]] = {}
        for r in rows:
            by_case.setdefault((r["fold"], r["case"]), []).append(r["points"])
        values = np.array([np.mean(v) for v in by_case.values()])
    else:
        values = np.array([r["points"] for r in rows])
    results.append({"run": run, "name": name, "n": len(values), "mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0})
