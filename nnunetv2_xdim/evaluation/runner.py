"""Evaluating runs against a reference folder, in parallel over cases, and writing the reports."""
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from nnunetv2_xdim.evaluation import camus_clinical, chaos_score, report
from nnunetv2_xdim.evaluation.challenges import Preset, camus_patient
from nnunetv2_xdim.evaluation.errors import EvaluationError
from nnunetv2_xdim.evaluation.folders import Run, case_files, check_geometry, discover_runs, match_cases, read_labels
from nnunetv2_xdim.evaluation.metrics import structure_metrics


@dataclass(frozen=True)
class CaseTask:
    run: str
    fold: str
    case: str
    pred_path: str
    ref_path: str
    preset: Preset
    clinical: bool   # also measure the LV disks (CAMUS clinical indices)


@dataclass
class CaseResult:
    rows: List[Dict]
    lv_pred: Optional[camus_clinical.Disks] = None
    lv_ref: Optional[camus_clinical.Disks] = None
    # Prediction labels outside the labels given with --labels (warned about once per run, not an error).
    unexpected_labels: Tuple[int, ...] = ()


def _unexpected_labels(array: np.ndarray, path: str, role: str, preset: Preset) -> Tuple[int, ...]:
    """Label values of a file outside the preset's convention: an error where the convention is known (a preset's
    own labels or a dataset.json), returned for a warning where the labels were named with --labels."""
    check = preset.label_check
    if check is None or (role == "reference" and not check.strict):
        return ()
    unexpected = tuple(sorted(set(np.unique(array).tolist()) - check.known))
    if unexpected and check.strict:
        raise EvaluationError(f"{role} {path} holds label(s) {list(unexpected)}, which the {preset.name} preset "
                              f"does not expect: it assumes {check.convention}, label values {sorted(check.known)}; "
                              f"{check.remedy}")
    return unexpected


def evaluate_case(task: CaseTask) -> CaseResult:
    """Every structure's metrics for one case (runs in a worker process)."""
    ref = read_labels(task.ref_path)
    pred = read_labels(task.pred_path)
    check_geometry(pred, ref, task.pred_path, task.ref_path)
    _unexpected_labels(ref.array, task.ref_path, "reference", task.preset)
    unexpected = _unexpected_labels(pred.array, task.pred_path, "prediction", task.preset)
    groups = task.preset.groups(task.case)
    rows = []
    for structure in task.preset.structures:
        labels = list(structure.labels)
        metrics = structure_metrics(np.isin(pred.array, labels), np.isin(ref.array, labels), ref.spacing,
                                    task.preset.convention)
        rows.append({"run": task.run, "fold": task.fold, "case": task.case, "structure": structure.name,
                     **groups, **metrics, "prediction": task.pred_path})
    if not task.clinical:
        return CaseResult(rows, unexpected_labels=unexpected)
    if ref.array.ndim != 2:
        raise EvaluationError(f"CAMUS clinical indices need 2D images, but {task.ref_path} has shape "
                              f"{ref.full_shape}; evaluate sequences with --preset generic")
    return CaseResult(rows, camus_clinical.lv_disks(pred.array, pred.spacing),
                      camus_clinical.lv_disks(ref.array, ref.spacing), unexpected)


def _warn_unexpected_labels(tasks: List[CaseTask], results: List[CaseResult], preset: Preset) -> None:
    """One warning per run whose predictions hold labels that --labels does not name."""
    found: Dict[str, Tuple[set, List[str]]] = {}
    for task, result in zip(tasks, results):
        if result.unexpected_labels:
            values, paths = found.setdefault(task.run, (set(), []))
            values.update(result.unexpected_labels)
            paths.append(task.pred_path)
    for run, (values, paths) in found.items():
        warnings.warn(f"{len(paths)} prediction(s) of run {run!r} hold label(s) {sorted(values)} outside "
                      f"{preset.label_check.convention} {sorted(preset.label_check.known)} (e.g. {paths[0]}); they "
                      f"are not evaluated: {preset.label_check.remedy}")


def _run_tasks(tasks: List[CaseTask], num_processes: int) -> List[CaseResult]:
    def progress(done: int) -> None:
        if done == len(tasks) or done % max(1, len(tasks) // 10) == 0:
            print(f"evaluated {done}/{len(tasks)} cases", file=sys.stderr, flush=True)

    results = []
    if num_processes <= 1:
        for task in tasks:
            results.append(evaluate_case(task))
            progress(len(results))
        return results
    pool = ProcessPoolExecutor(max_workers=num_processes)
    try:
        for result in pool.map(evaluate_case, tasks, chunksize=1):
            results.append(result)
            progress(len(results))
    except BaseException:
        # Report the first failing case now rather than after every queued case has run.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def evaluate(reference_folder: str, prediction_specs: Sequence[str], preset: Preset, output_folder: str,
             num_processes: int = 1, folds: Optional[Sequence[str]] = None, allow_missing: bool = False,
             camus_info: Optional[str] = None) -> Dict[str, str]:
    """Evaluates every run found in prediction_specs and writes the reports; returns report name -> path."""
    if not os.path.isdir(reference_folder):
        raise EvaluationError(f"reference folder {reference_folder} does not exist")
    references = case_files(reference_folder)
    if not references:
        raise EvaluationError(f"reference folder {reference_folder} holds no label files")
    runs: List[Run] = [run for spec in prediction_specs for run in discover_runs(spec, folds)]
    names = [run.name for run in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EvaluationError(f"several prediction sources are named {duplicates}; name them with NAME=PATH")
    for run in runs:
        match_cases(run, references, reference_folder, allow_missing)

    clinical = preset.name == "camus"
    tasks = [CaseTask(run.name, f.fold, case, f.path, references[case], preset, clinical)
             for run in runs for case, f in sorted(run.cases.items())]
    results = _run_tasks(tasks, num_processes)
    _warn_unexpected_labels(tasks, results, preset)
    rows = [row for result in results for row in result.rows]

    os.makedirs(output_folder, exist_ok=True)
    extra_columns: Tuple[str, ...] = ()
    chaos_tasks = camus_tables = None
    if preset.name == "chaos":
        for row in rows:
            chaos_score.add_points(row)
        extra_columns = chaos_score.POINT_COLUMNS
        chaos_tasks = chaos_score.task_scores(rows)
    outputs = {"csv": os.path.join(output_folder, "metrics_per_case.csv")}
    report.write_csv(rows, report.case_columns(preset, extra_columns), outputs["csv"])
    if clinical:
        info = camus_clinical.read_info_files(camus_info) if camus_info else None
        lv_cases = [{"run": t.run, "patient": camus_patient(t.case), **preset.groups(t.case),
                     "lv_pred": r.lv_pred, "lv_ref": r.lv_ref} for t, r in zip(tasks, results)]
        patients = camus_clinical.patient_table(lv_cases, info)
        outputs["clinical_csv"] = os.path.join(output_folder, "camus_clinical.csv")
        report.write_csv(patients, list(patients[0]) if patients else ["run", "patient"], outputs["clinical_csv"])
        camus_tables = camus_clinical.agreement_table(patients)

    outputs["markdown"] = os.path.join(output_folder, "summary.md")
    outputs["figure"] = os.path.join(output_folder, "boxplots.png")
    report_metrics = report.reported_metrics(preset)
    report.write_markdown(outputs["markdown"], rows, runs, reference_folder, preset, report_metrics,
                          os.path.basename(outputs["figure"]), chaos_tasks, camus_tables)
    report.plot_boxplots(outputs["figure"], rows, [r.name for r in runs], preset, report_metrics)
    return outputs
