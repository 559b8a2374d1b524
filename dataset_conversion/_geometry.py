"""Image grids (size, spacing, origin, direction) as SimpleITK reads them, compared and restored."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ._common import ConversionError


def read_header(path: str) -> sitk.ImageFileReader:
    """The grid of an image file without reading its voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ConversionError(f"{path}: cannot read image header ({str(e).strip().splitlines()[-1]})") from None
    return reader


def read_image(path: str) -> sitk.Image:
    try:
        return sitk.ReadImage(path)
    except RuntimeError as e:
        raise ConversionError(f"{path}: cannot read image ({str(e).strip().splitlines()[-1]})") from None


def grid(image) -> dict:
    """Grid of an sitk.Image or ImageFileReader as a JSON-friendly dict (full double precision)."""
    return {"size": list(image.GetSize()), "spacing": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()), "direction": list(image.GetDirection())}


def set_grid(image: sitk.Image, g: dict) -> sitk.Image:
    image.SetSpacing(g["spacing"])
    image.SetOrigin(g["origin"])
    image.SetDirection(g["direction"])
    return image


def grid_mismatch(a: dict, b: dict, tol: float = 1e-4) -> str | None:
    """What differs between two grids beyond tol (file headers store float32), or None."""
    if list(a["size"]) != list(b["size"]):
        return f"size {tuple(b['size'])} instead of {tuple(a['size'])}"
    for key in ("spacing", "origin", "direction"):
        if not np.allclose(a[key], b[key], rtol=0, atol=tol):
            return f"{key} {_fmt(b[key])} instead of {_fmt(a[key])}"
    return None


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def check_same_grid(ref_path: str, ref: dict, path: str, other: dict) -> None:
    problem = grid_mismatch(ref, other)
    if problem:
        raise ConversionError(f"{path}: {problem} (expected the grid of {ref_path})")
