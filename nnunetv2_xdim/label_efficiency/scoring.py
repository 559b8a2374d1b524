"""Scoring one run's test predictions with the project's evaluation, against the original-resolution masks.

Per case, the Dice of every structure of dataset.json (labels, or regions), averaged over the structures the
reference or the prediction holds (hippocampus: the mean of anterior and posterior). A run's Dice is the mean over
the test cases whose reference holds foreground; cases with an empty reference (e.g. BUSI's normal images) are
reported apart, as the fraction of them on which the prediction holds any foreground (false-positive rate).
"""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..evaluation.challenges import generic, structures_from_dataset_json
from ..evaluation.runner import CaseTask, evaluate_case

CASE_METRICS = ("dice", "hd95", "assd")


def score_cases(prediction_folder: str, reference_files: Dict[str, str], dataset_json: str,
                file_ending: str) -> List[dict]:
    """One row per test case: per-structure and mean metrics, whether the reference has foreground, and whether
    the prediction has any."""
    preset = generic(structures_from_dataset_json(dataset_json))
    rows = []
    for case, ref in sorted(reference_files.items()):
        pred = os.path.join(prediction_folder, case + file_ending)
        if not os.path.isfile(pred):
            raise FileNotFoundError(f"prediction {pred} is missing: nnUNetv2_predict did not write every test case")
        result = evaluate_case(CaseTask("run", "", case, pred, ref, preset, False))
        row = {"case": case,
               "reference_foreground": any(r["ref_volume"] > 0 for r in result.rows),
               "prediction_foreground": any(r["pred_volume"] > 0 for r in result.rows)}
        for metric in CASE_METRICS:
            values = [r[metric] for r in result.rows]
            row[metric] = _nanmean(values)
            for r in result.rows:
                row[f"{metric}_{r['structure']}"] = r[metric]
        rows.append(row)
    return rows


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarise(case_rows: List[dict]) -> Dict[str, Optional[float]]:
    """The run's means: over cases with foreground in the reference; false positives on the empty ones."""
    fg = [r for r in case_rows if r["reference_foreground"]]
    empty = [r for r in case_rows if not r["reference_foreground"]]
    out: Dict[str, Optional[float]] = {"n_test": len(case_rows), "n_test_foreground": len(fg),
                                       "n_test_empty": len(empty)}
    for metric in CASE_METRICS:
        out[f"{metric}_mean"] = _nanmean([r[metric] for r in fg]) if fg else None
    out["false_positive_rate_empty"] = (float(np.mean([r["prediction_foreground"] for r in empty]))
                                        if empty else None)
    return out
