"""Per-structure segmentation metrics in physical units, with explicit empty-mask conventions.

Metrics (one binary structure, prediction P against reference R):
- dice: 2|P and R| / (|P| + |R|).
- hd: Hausdorff distance, the maximum of all surface distances in both directions (CHAOS: MSSD), in mm.
- hd95: the larger of the two directed 95th percentiles (numpy's linear interpolation) of the distances from the
  surface voxels of one mask to the surface of the other, in mm: MONAI's compute_hausdorff_distance with
  percentile=95. Not DeepMind's compute_robust_hausdorff, which measures between voxel corners and weights each
  distance by the area of its surface element, nor medpy's hd95, the 95th percentile of both directions pooled;
  on one mask pair the three can differ by far more than a voxel (tests/test_evaluation_metrics.py).
- assd: average symmetric surface distance, all surface distances of both directions pooled and averaged
  (CHAOS: ASSD, computed this way by the CHAOS evaluation code; CAMUS: MAD), in mm; not the mean of the two
  directed averages.
- ravd: relative absolute volume difference as CHAOS defines it, |V_P - V_R| / V_R * 100, in percent.
- ref_volume, pred_volume: V_R and V_P in mm^d (mm^3 for volumes, mm^2 for 2D images).

Empty masks (see EmptyConvention): if both are empty the structure is either a perfect match (BraTS) or
undefined (NaN, left out of means and counted separately); where a challenge annotates only some structures
(CHAOS CT: liver only), a structure absent from the reference is undefined whatever the prediction. Otherwise,
if exactly one is empty, dice is 0, ravd is 100 when
the prediction is empty (undefined, NaN, when the reference is empty) and every distance is the image diagonal,
the largest distance possible in the image (BraTS' 373.13 mm for 240x240x155 at 1 mm), so that a missed or
hallucinated structure is penalised, never dropped.
"""
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np

from nnunetv2_xdim.evaluation.surface import surface_distances

METRICS = ("dice", "hd", "hd95", "assd", "ravd")
VOLUMES = ("ref_volume", "pred_volume")
HIGHER_IS_BETTER = {"dice": True, "hd": False, "hd95": False, "assd": False, "ravd": False}
UNITS = {"dice": "", "hd": "mm", "hd95": "mm", "assd": "mm", "ravd": "%"}


@dataclass(frozen=True)
class EmptyConvention:
    """How a challenge scores structures absent from the reference and/or the prediction."""
    both_empty_is_perfect: bool
    # A structure absent from the reference was not annotated there: not evaluated, whatever the prediction.
    ignore_empty_reference: bool = False
    # Whether the image border counts as surface where a structure is cut by the field of view (see surface.py).
    outside_is_background: bool = True


def image_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the image's diagonal: no two voxels of the image are further apart."""
    return float(np.sqrt(np.sum((np.asarray(shape, float) * np.asarray(spacing, float)) ** 2)))


def structure_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                      convention: EmptyConvention) -> Dict[str, float]:
    """All metrics of one binary structure (boolean arrays of the same shape, spacing in mm per axis)."""
    voxel_volume = float(np.prod(spacing))
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    result = {"ref_volume": n_ref * voxel_volume, "pred_volume": n_pred * voxel_volume}

    if n_ref == 0 and convention.ignore_empty_reference:
        result.update({m: np.nan for m in METRICS})
        return result
    if n_pred == 0 and n_ref == 0:
        if convention.both_empty_is_perfect:
            result.update(dice=1.0, hd=0.0, hd95=0.0, assd=0.0, ravd=0.0)
        else:
            result.update({m: np.nan for m in METRICS})
        return result

    result["dice"] = 2.0 * int(np.count_nonzero(pred & ref)) / (n_pred + n_ref)
    result["ravd"] = abs(n_pred - n_ref) / n_ref * 100.0 if n_ref > 0 else np.nan

    if n_pred == 0 or n_ref == 0:
        worst = image_diagonal(pred.shape, spacing)
        result.update(hd=worst, hd95=worst, assd=worst)
        return result

    distances = surface_distances(pred, ref, spacing, convention.outside_is_background)
    if distances is None:
        result.update(hd=np.nan, hd95=np.nan, assd=np.nan)
        return result
    to_ref, to_pred = distances
    result["hd"] = float(max(to_ref.max(), to_pred.max()))
    result["hd95"] = float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)))
    result["assd"] = float((to_ref.sum() + to_pred.sum()) / (to_ref.size + to_pred.size))
    return result
