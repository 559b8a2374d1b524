"""CAMUS clinical indices from segmentations: LV volumes and ejection fraction by the biplane method of disks.

Simpson's biplane rule (the method CAMUS reports, as recommended by the ASE/EACVI chamber-quantification
guidelines): the LV long axis runs from the middle of the mitral annulus to the apex; in each apical view
(2CH, 4CH) the cavity is cut into 20 disks perpendicular to that axis, and
    V = pi / 4 * h * sum_i a_i * b_i,   h = max(L_2CH, L_4CH) / 20,
where a_i and b_i are the disk diameters of the two views and L their long-axis lengths. EF = (EDV - ESV) / EDV.

Landmarks from the label map (1 LV cavity, 2 myocardium, 3 left atrium): the mitral plane is the cavity border
facing the atrium (or, if the atrium is missing, the cavity border not covered by myocardium); its two points
furthest apart are the annulus hinges; the apex is the cavity point furthest from their middle. Only the largest
connected part of the predicted cavity is measured, so stray islands do not move the landmarks.
"""
import glob
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from nnunetv2_xdim.evaluation.errors import EvaluationError

LV, MYO, LA = 1, 2, 3
N_DISKS = 20
INDICES = ("EDV", "ESV", "EF")
INFO_KEYS = {"EDV": "LVedv", "ESV": "LVesv", "EF": "LVef"}

# A view's long-axis length (mm) and its disk diameters (mm).
Disks = Tuple[float, np.ndarray]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    components, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def _farthest_pair(points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    # Two sweeps (farthest from the centroid, then farthest from that point): linear in the number of points, and
    # exact for the nearly straight point sets a mitral plane gives.
    first = points[np.argmax(np.linalg.norm(points - points.mean(axis=0), axis=1))]
    second = points[np.argmax(np.linalg.norm(points - first, axis=1))]
    return first, second


def lv_disks(seg: np.ndarray, spacing: Sequence[float], n_disks: int = N_DISKS) -> Optional[Disks]:
    """Long-axis length and disk diameters of the LV cavity in one 2D apical view (spacing: mm per axis).

    None when there is no cavity or no mitral plane can be found.
    """
    if seg.ndim != 2:
        raise ValueError(f"CAMUS clinical indices need 2D segmentations, got shape {seg.shape}")
    spacing = np.asarray(spacing, dtype=float)
    lv = _largest_component(seg == LV)
    if not lv.any():
        return None
    cross = ndimage.generate_binary_structure(2, 1)
    border = lv & ~ndimage.binary_erosion(lv, cross, border_value=0)
    base = border & ndimage.binary_dilation(seg == LA, cross)
    if not base.any():
        base = border & ndimage.binary_dilation(~lv & (seg != MYO), cross, border_value=1)
    if not base.any():
        return None

    hinge_a, hinge_b = _farthest_pair(np.argwhere(base) * spacing)
    middle = (hinge_a + hinge_b) / 2
    cavity = np.argwhere(lv) * spacing
    offsets = cavity - middle
    apex = cavity[np.argmax(np.linalg.norm(offsets, axis=1))]
    if np.allclose(apex, middle):
        return None
    axis = (apex - middle) / np.linalg.norm(apex - middle)
    normal = np.array([-axis[1], axis[0]])

    # Landmarks are pixel centres; the cavity reaches half a pixel further at base and apex.
    half_pixel = 0.5 * float(np.abs(axis) @ spacing)
    start, end = -half_pixel, float((offsets @ axis).max()) + half_pixel
    length = end - start

    # Diameters: the cavity's extent along each disk's mid-line, sampled far finer than a pixel.
    reach = float(np.abs(offsets @ normal).max()) + 2 * float(spacing.max())
    step = float(spacing.min()) / 4
    along = np.arange(-reach, reach, step)
    centres = start + (np.arange(n_disks) + 0.5) * length / n_disks
    points = middle + centres[:, None, None] * axis + along[None, :, None] * normal   # (disks, samples, 2)
    indices = (points / spacing).reshape(-1, 2).T
    inside = ndimage.map_coordinates(lv.astype(np.uint8), indices, order=0, mode="constant", cval=0)
    diameters = inside.reshape(n_disks, -1).sum(axis=1) * step
    return length, diameters


def biplane_volume(two_chamber: Optional[Disks], four_chamber: Optional[Disks]) -> float:
    """LV volume in ml from the disks of the 2CH and 4CH views at one instant (NaN if a view is missing)."""
    if two_chamber is None or four_chamber is None:
        return np.nan
    (length_2, diam_2), (length_4, diam_4) = two_chamber, four_chamber
    height = max(length_2, length_4) / len(diam_2)
    return float(np.pi / 4 * height * np.sum(diam_2 * diam_4)) / 1000.0


def clinical_indices(disks: Dict[Tuple[str, str], Optional[Disks]]) -> Dict[str, float]:
    """EDV, ESV (ml) and EF (%) of one patient from the disks keyed by (view, instant)."""
    edv = biplane_volume(disks.get(("2CH", "ED")), disks.get(("4CH", "ED")))
    esv = biplane_volume(disks.get(("2CH", "ES")), disks.get(("4CH", "ES")))
    ef = 100.0 * (edv - esv) / edv if edv > 0 else np.nan
    return {"EDV": edv, "ESV": esv, "EF": ef}


def patient_number(name: str) -> Optional[int]:
    """The patient number of a case or folder name ('patient0042' -> 42), None if it holds no digits."""
    digits = re.findall(r"\d+", name)
    return int(digits[-1]) if digits else None


def read_info_files(root: str) -> Dict[int, Dict[str, float]]:
    """Reference EDV/ESV/EF per patient number from the Info_2CH.cfg / Info_4CH.cfg files under root.

    The files hold 'Key: value' lines; LVedv, LVesv and LVef are patient-level, so either view's file serves.
    """
    files = sorted(glob.glob(os.path.join(root, "**", "Info_[24]CH.cfg"), recursive=True))
    if not files:
        raise EvaluationError(f"no Info_2CH.cfg or Info_4CH.cfg under {root} (expected the CAMUS release's "
                                f"patient folders, e.g. {os.path.join(root, 'patient0001', 'Info_2CH.cfg')})")
    info: Dict[int, Dict[str, float]] = {}
    for path in files:
        number = patient_number(os.path.basename(os.path.dirname(path)))
        if number is None or number in info:
            continue
        values = {}
        with open(path) as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    values[key.strip()] = value.strip()
        try:
            found = {index: float(values[key]) for index, key in INFO_KEYS.items() if key in values}
        except ValueError as e:
            raise EvaluationError(f"{path}: cannot read a number ({e})")
        if found:
            info[number] = found
    return info


def agreement(estimate: Sequence[float], truth: Sequence[float]) -> Dict[str, float]:
    """Bland-Altman agreement of paired values (pairs with a NaN left out): n, Pearson r, bias = mean
    (estimate - truth), its standard deviation, 95 % limits of agreement (bias +- 1.96 sd), mean absolute error."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    valid = ~(np.isnan(estimate) | np.isnan(truth))
    estimate, truth = estimate[valid], truth[valid]
    n = int(valid.sum())
    if n == 0:
        return {"n": 0, "corr": np.nan, "bias": np.nan, "sd": np.nan, "loa_low": np.nan, "loa_high": np.nan,
                "mae": np.nan}
    diff = estimate - truth
    sd = float(diff.std(ddof=1)) if n > 1 else np.nan
    constant = n < 2 or np.ptp(estimate) == 0 or np.ptp(truth) == 0
    corr = np.nan if constant else float(np.corrcoef(estimate, truth)[0, 1])
    bias = float(diff.mean())
    return {"n": n, "corr": corr, "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd,
            "loa_high": bias + 1.96 * sd, "mae": float(np.abs(diff).mean())}


def patient_table(cases: List[Dict], info: Optional[Dict[int, Dict[str, float]]]) -> List[Dict]:
    """One row per run and patient with EDV/ESV/EF from the prediction, from the reference masks and, where
    given, from the Info files. cases: dicts with run, patient, view, instant, lv_pred, lv_ref (Disks or None)."""
    grouped: Dict[Tuple[str, str], Dict[str, Dict]] = {}
    for c in cases:
        entry = grouped.setdefault((c["run"], c["patient"]), {"pred": {}, "ref": {}})
        entry["pred"][(c["view"], c["instant"])] = c["lv_pred"]
        entry["ref"][(c["view"], c["instant"])] = c["lv_ref"]
    rows = []
    for (run, patient), entry in grouped.items():
        row = {"run": run, "patient": patient}
        for source in ("pred", "ref"):
            row.update({f"{k}_{source}": v for k, v in clinical_indices(entry[source]).items()})
        known = (info or {}).get(patient_number(patient), {})
        row.update({f"{k}_info": known.get(k, np.nan) for k in INDICES})
        rows.append(row)
    return rows


def agreement_table(patients: List[Dict]) -> List[Dict]:
    """Agreement per run and index: prediction vs reference masks, prediction vs Info files, reference masks vs
    Info files (the last checks our disk method against the release's own values)."""
    results = []
    for run in dict.fromkeys(p["run"] for p in patients):
        rows = [p for p in patients if p["run"] == run]
        for index in INDICES:
            for estimate, truth in (("pred", "ref"), ("pred", "info"), ("ref", "info")):
                stats = agreement([r[f"{index}_{estimate}"] for r in rows], [r[f"{index}_{truth}"] for r in rows])
                if stats["n"]:
                    results.append({"run": run, "index": index, "comparison": f"{estimate} vs {truth}", **stats})
    return results
