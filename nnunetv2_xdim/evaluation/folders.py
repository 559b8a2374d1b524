"""Finding cases: reference folders, prediction folders and nnU-Net results trees, and reading label images.

A prediction source is one of
- a folder of prediction files (nnUNetv2_predict output, an exported submission, a crossval_results folder);
- an nnU-Net model folder `<Trainer__Plans__config>` whose `fold_N/validation/` folders are aggregated into one
  run, as nnU-Net's cross-validation produces them (each case is predicted by the fold that held it out);
- a dataset results folder (`$nnUNet_results/DatasetXXX_Name`) holding several model folders: one run each.
Cases are matched to references by file name without its ending.
"""
import os
import re
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunetv2_xdim.evaluation.errors import EvaluationError

# Longest first, so that "x.nii.gz" is case "x" and not "x.nii".
FILE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".png")
_FOLD = re.compile(r"^fold_(\d+|all)$")


@dataclass
class CaseFile:
    path: str
    fold: str = ""   # "" outside cross-validation


@dataclass
class Run:
    name: str
    source: str
    cases: Dict[str, CaseFile]
    folds: Tuple[str, ...] = ()


def case_id(filename: str) -> Optional[str]:
    for ending in FILE_ENDINGS:
        if filename.endswith(ending) and len(filename) > len(ending):
            return filename[: -len(ending)]
    return None


def case_files(folder: str) -> Dict[str, str]:
    """Case id -> path of every label file in folder (not recursive)."""
    found: Dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        case = case_id(name)
        if case is None or not os.path.isfile(path):
            continue
        if case in found:
            raise EvaluationError(f"case {case!r} appears twice in {folder}: {os.path.basename(found[case])} and "
                                  f"{name}; keep one file per case")
        found[case] = path
    return found


def _fold_folders(model_folder: str) -> Dict[str, str]:
    """Fold name ('0', '1', ..., 'all') -> fold folder, for the fold_* folders of an nnU-Net model folder."""
    folds = {}
    for name in os.listdir(model_folder):
        match = _FOLD.match(name)
        if match and os.path.isdir(os.path.join(model_folder, name)):
            folds[match.group(1)] = os.path.join(model_folder, name)
    return folds


def _is_model_folder(folder: str) -> bool:
    return bool(_fold_folders(folder))


def _cross_validation_run(name: str, model_folder: str, folds: Optional[Sequence[str]]) -> Run:
    available = _fold_folders(model_folder)
    if folds is None:
        # fold_all is trained on every case: its "validation" is training data, so it is used only on request.
        selected = sorted((f for f in available if f != "all"), key=int)
        required = False
    else:
        selected, required = [str(f) for f in folds], True
    cases: Dict[str, CaseFile] = {}
    used = []
    for fold in selected:
        validation = os.path.join(available.get(fold, os.path.join(model_folder, f"fold_{fold}")), "validation")
        if not os.path.isdir(validation):
            message = f"{validation} does not exist (fold {fold} not trained or not validated yet)"
            if required:
                raise EvaluationError(message)
            warnings.warn(message + "; evaluating the other folds")
            continue
        for case, path in case_files(validation).items():
            if case in cases:
                raise EvaluationError(f"case {case!r} is predicted by fold {cases[case].fold} and fold {fold} of "
                                      f"{model_folder}; the folds' validation sets must not overlap")
            cases[case] = CaseFile(path, fold)
        used.append(fold)
    if not cases:
        raise EvaluationError(f"no validation predictions in {model_folder} (looked in fold_N/validation for "
                              f"folds {', '.join(selected) or 'none'})")
    return Run(name, model_folder, cases, tuple(used))


def discover_runs(spec: str, folds: Optional[Sequence[str]] = None) -> List[Run]:
    """Runs for one prediction source given as PATH or NAME=PATH (see the module docstring)."""
    name, sep, path = spec.partition("=")
    if not sep or os.sep in name or os.path.exists(spec):
        name, path = "", spec
    path = os.path.normpath(path)
    if not os.path.isdir(path):
        raise EvaluationError(f"prediction folder {path} does not exist")
    default_name = name or os.path.basename(os.path.abspath(path))

    files = case_files(path)
    if files:
        return [Run(default_name, path, {c: CaseFile(p) for c, p in files.items()})]
    if _is_model_folder(path):
        return [_cross_validation_run(default_name, path, folds)]
    # Sorted by trainer, plans, configuration: nnUNetTrainer__... comes before nnUNetTrainerXDim__... and serves
    # as the baseline of the paired comparison.
    model_folders = sorted((os.path.join(path, d) for d in os.listdir(path)
                            if os.path.isdir(os.path.join(path, d)) and _is_model_folder(os.path.join(path, d))),
                           key=lambda folder: os.path.basename(folder).split("__"))
    if model_folders:
        prefix = f"{name}/" if name else ""
        return [_cross_validation_run(prefix + os.path.basename(m), m, folds) for m in model_folders]
    raise EvaluationError(f"{path} holds no prediction files ({', '.join(FILE_ENDINGS)}), no fold_N/validation "
                          f"folders (an nnU-Net model folder) and no model folders (Trainer__Plans__config)")


def match_cases(run: Run, references: Dict[str, str], reference_folder: str, allow_missing: bool) -> None:
    """Checks that every prediction has a reference and (unless allow_missing) every reference a prediction."""
    def listing(cases: List[str]) -> str:
        return ", ".join(cases[:5]) + (f" and {len(cases) - 5} more" if len(cases) > 5 else "")

    orphans = sorted(set(run.cases) - set(references))
    if orphans:
        raise EvaluationError(f"{len(orphans)} prediction(s) of run {run.name!r} ({run.source}) have no reference "
                              f"in {reference_folder}: {listing(orphans)}")
    missing = sorted(set(references) - set(run.cases))
    if missing:
        message = (f"run {run.name!r} ({run.source}) has no prediction for {len(missing)} of {len(references)} "
                   f"reference case(s): {listing(missing)}")
        if not allow_missing:
            raise EvaluationError(message + " (use --allow-missing to evaluate the predicted cases only)")
        warnings.warn(message + "; evaluating the predicted cases only")


@dataclass
class LabelImage:
    array: np.ndarray            # integer labels, singleton axes removed
    spacing: Tuple[float, ...]   # mm per axis of array
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]
    full_shape: Tuple[int, ...]  # array shape before removing singleton axes


def read_labels(path: str) -> LabelImage:
    """A label image as a numpy array in (z, y, x) order with its spacing in the same order.

    Axes of size 1 are dropped with their spacing, so that a 2D image stored as (1, H, W), as nnU-Net writes 2D
    data, is measured in 2D: in 3D, every pixel of a one-slice image would be surface.
    """
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as e:
        raise EvaluationError(f"cannot read {path}: {str(e).strip().splitlines()[-1]}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise EvaluationError(f"{path} has {image.GetNumberOfComponentsPerPixel()} components per pixel; expected "
                              f"a label image with one")
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise EvaluationError(f"{path} holds non-integer values; expected a label image")
        array = rounded
    array = array.astype(np.int32)
    spacing = image.GetSpacing()[::-1]
    keep = [axis for axis, size in enumerate(array.shape) if size > 1]
    return LabelImage(array.reshape([array.shape[a] for a in keep]), tuple(float(spacing[a]) for a in keep),
                      image.GetOrigin(), image.GetDirection(), array.shape)


def check_geometry(pred: LabelImage, ref: LabelImage, pred_path: str, ref_path: str) -> None:
    """Shape and spacing must agree (metrics would be meaningless); a different origin or orientation is only
    warned about, since exported submissions may not keep them, but it often means a converter bug. Origin and
    orientation are compared only between images of the same dimension."""
    # Compared without singleton axes: a 2D reference (H, W) and an nnU-Net prediction (1, H, W) agree.
    if pred.array.shape != ref.array.shape:
        raise EvaluationError(f"prediction {pred_path} has shape {pred.full_shape} but reference {ref_path} has "
                              f"{ref.full_shape} (array order z, y, x)")
    if not np.allclose(pred.spacing, ref.spacing, rtol=1e-3, atol=0):
        raise EvaluationError(f"prediction {pred_path} has spacing {pred.spacing} mm but reference {ref_path} has "
                              f"{ref.spacing} mm (order z, y, x)")
    tolerance = 0.01 * min(ref.spacing) if ref.spacing else 1e-3
    if len(pred.origin) != len(ref.origin):
        return
    if not np.allclose(pred.origin, ref.origin, rtol=0, atol=tolerance) or \
            not np.allclose(pred.direction, ref.direction, rtol=0, atol=1e-3):
        warnings.warn(f"prediction {pred_path} and reference {ref_path} differ in origin or orientation; "
                      f"evaluating voxel by voxel anyway")
