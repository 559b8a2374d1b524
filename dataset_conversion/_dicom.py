"""A folder of single-slice DICOM files as one volume, keeping the file-name order.

The slices are stacked by position along the slice normal (so the volume's geometry is a regular,
right-handed grid whatever the naming), and the permutation from file-name order to voxel order is kept:
challenge masks that pair with files by name (CHAOS) are stacked with the same permutation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ._common import ConversionError, files_with_suffix, require_dir, warn

POSITION_TOL_MM = 1e-2


@dataclass
class DicomSeries:
    folder: str
    files: list[str]  # file names in file-name order
    z_index: list[int]  # voxel slice index of each file, in file-name order
    grid: dict  # size (x, y, z), spacing, origin, direction as SimpleITK uses them
    volume: np.ndarray | None = None  # (z, y, x) in voxel order; None when read without pixels

    @property
    def order(self) -> list[int]:
        """File index of each voxel slice."""
        return list(np.argsort(self.z_index))


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise ConversionError("reading DICOM needs pydicom: pip install 'nnunetv2-xdim[conversion]'") from None
    return pydicom


def _tag(ds, name: str, path: str, n: int) -> np.ndarray:
    value = getattr(ds, name, None)
    if value is None or len(value) != n:
        raise ConversionError(f"{path}: missing or malformed DICOM tag {name} (needed for the slice geometry)")
    return np.array([float(v) for v in value])


def _pixels(ds, path: str) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for unsupported encodings
        raise ConversionError(f"{path}: cannot decode pixel data ({e})") from None
    if pixels.ndim != 2:
        raise ConversionError(f"{path}: pixel data of shape {pixels.shape}, expected one 2D grey slice")
    slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
    return pixels.astype(np.float64) * slope + intercept


def _compact(volume: np.ndarray) -> np.ndarray:
    """Smallest of int16/int32/float32 that holds the rescaled values exactly (CT: int16 HU)."""
    if np.all(volume == np.round(volume)):
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if volume.min() >= info.min and volume.max() <= info.max:
                return volume.astype(dtype)
    return volume.astype(np.float32)


def read_series(folder: str, pixels: bool = True) -> DicomSeries:
    require_dir(folder, "DICOM folder")
    names = files_with_suffix(folder, ".dcm")
    if not names:
        raise ConversionError(f"no .dcm files in {folder}")
    pydicom = _pydicom()
    paths = [os.path.join(folder, n) for n in names]
    headers = []
    for path in paths:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=not pixels))
        except Exception as e:
            raise ConversionError(f"{path}: not a readable DICOM file ({e})") from None

    first = headers[0]
    iop, spacing = _tag(first, "ImageOrientationPatient", paths[0], 6), _tag(first, "PixelSpacing", paths[0], 2)
    shape = (int(first.Rows), int(first.Columns))
    positions = []
    for path, ds in zip(paths, headers):
        if not np.allclose(_tag(ds, "ImageOrientationPatient", path, 6), iop, atol=1e-4) or \
                not np.allclose(_tag(ds, "PixelSpacing", path, 2), spacing, atol=1e-4) or \
                (int(ds.Rows), int(ds.Columns)) != shape:
            raise ConversionError(f"{path}: orientation, pixel spacing or size differs from {paths[0]} "
                                  f"(expected one grid per series)")
        positions.append(_tag(ds, "ImagePositionPatient", path, 3))
    positions = np.array(positions)

    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    depth = positions @ normal
    order = np.argsort(depth, kind="stable")
    if len(names) > 1:
        gaps = np.diff(depth[order])
        if np.any(gaps < POSITION_TOL_MM):
            k = int(np.argmin(gaps))
            raise ConversionError(f"{paths[order[k]]} and {paths[order[k + 1]]} are at the same slice position")
        step = float(depth[order[-1]] - depth[order[0]]) / (len(names) - 1)
        if np.max(np.abs(gaps - step)) > max(POSITION_TOL_MM, 0.01 * step):
            raise ConversionError(f"{folder}: irregular slice spacing (gaps from {gaps.min():.4g} to "
                                  f"{gaps.max():.4g} mm); expected evenly spaced slices")
        drift = (positions[order] - positions[order[0]]) - np.outer(depth[order] - depth[order[0]], normal)
        if np.abs(drift).max() > POSITION_TOL_MM:
            warn(f"{folder}: slices shift in-plane by up to {np.abs(drift).max():.3g} mm (tilted gantry?); "
                 f"the volume keeps the first slice's in-plane position")
    else:
        step = float(getattr(first, "SpacingBetweenSlices", None) or getattr(first, "SliceThickness", None) or 1)

    z_index = np.empty(len(names), dtype=int)
    z_index[order] = np.arange(len(names))
    grid = {"size": [shape[1], shape[0], len(names)],
            "spacing": [float(spacing[1]), float(spacing[0]), step],  # PixelSpacing is (row, column) spacing
            "origin": positions[order[0]].tolist(),
            "direction": np.column_stack([row_dir, col_dir, normal]).ravel().tolist()}
    volume = None
    if pixels:
        volume = _compact(np.stack([_pixels(headers[i], paths[i]) for i in order]))
    return DicomSeries(folder, names, z_index.tolist(), grid, volume)
