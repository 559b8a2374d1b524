"""Surface distances between two binary masks in physical units, via Euclidean distance transforms.

A surface voxel is a foreground voxel with at least one face neighbour in the background (the definition of
the CHAOS evaluation code: mask XOR its erosion with a face-connected structuring element). The distance from
a surface voxel of A to the surface of B is the Euclidean distance, in mm, between voxel centres, to the
nearest surface voxel of B: one distance transform of "not surface of B" (scipy's exact EDT, with the voxel
spacing as sampling) read at the surface voxels of A. This gives exactly what a brute-force nearest-neighbour
search over all surface point pairs gives, in time linear in the number of voxels.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage


def _bounding_box(mask: np.ndarray, margin: int) -> Tuple[slice, ...]:
    """Bounding box of the foreground, grown by margin voxels and clipped to the image."""
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other_axes))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def surface(mask: np.ndarray, outside_is_background: bool = True) -> np.ndarray:
    """Foreground voxels that touch the background through a face.

    outside_is_background decides whether voxels on the image border count as surface where the object is cut
    by the field of view (True, as in DeepMind's surface-distance and SimpleITK) or not (False, as in the CHAOS
    evaluation code, which erodes with border_value=1).
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0 if outside_is_background else 1)
    return mask & ~eroded


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                      outside_is_background: bool = True) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Distances (mm) from every surface voxel of pred to the surface of ref, and from ref to pred.

    Both masks must be non-empty (empty masks are a convention of the challenge, handled by the caller).
    Returns None when a non-empty mask has no surface (it fills the whole image and outside_is_background is
    False), where surface distances are undefined.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} entries for a {pred.ndim}-D mask")
    # Every surface voxel lies inside the union's bounding box, and the exact EDT does not depend on the domain
    # as long as all feature voxels are inside it, so cropping changes nothing but the run time. The one-voxel
    # margin keeps crop edges that are not image edges in the background.
    box = _bounding_box(pred | ref, margin=1)
    pred, ref = pred[box], ref[box]
    surf_pred = surface(pred, outside_is_background)
    surf_ref = surface(ref, outside_is_background)
    if not surf_pred.any() or not surf_ref.any():
        return None
    sampling = [float(s) for s in spacing]
    to_ref = ndimage.distance_transform_edt(~surf_ref, sampling=sampling)[surf_pred]
    to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=sampling)[surf_ref]
    return to_ref, to_pred
