"""Metrics against analytic shapes, a brute-force search, SimpleITK's filters, and the empty-mask conventions."""
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree

from nnunetv2_xdim.evaluation.metrics import EmptyConvention, image_diagonal, structure_metrics
from nnunetv2_xdim.evaluation.surface import surface, surface_distances

NAN_IF_BOTH_EMPTY = EmptyConvention(both_empty_is_perfect=False)
BRATS = EmptyConvention(both_empty_is_perfect=True)


def ball(shape, spacing, centre_mm, radius_mm):
    """Voxels whose centre lies within radius of centre (physical coordinates, array axis order)."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm)) <= radius_mm ** 2


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9)])
def test_concentric_spheres_have_analytic_distances_and_volumes(spacing):
    shape = tuple(int(60 / s) for s in spacing)
    centre = (30.0, 30.0, 30.0)
    inner, outer = ball(shape, spacing, centre, 15.0), ball(shape, spacing, centre, 21.0)
    m = structure_metrics(inner, outer, spacing, NAN_IF_BOTH_EMPTY)
    # Every surface point of one sphere is 6 mm from the other: HD = HD95 = ASSD = 6 within a voxel.
    tolerance = max(spacing)
    for metric in ("hd", "hd95", "assd"):
        assert m[metric] == pytest.approx(6.0, abs=tolerance), metric
    assert m["assd"] == pytest.approx(6.0, abs=0.5 * tolerance)
    v_inner, v_outer = 4 / 3 * np.pi * 15 ** 3, 4 / 3 * np.pi * 21 ** 3
    assert m["pred_volume"] == pytest.approx(v_inner, rel=0.03)
    assert m["ref_volume"] == pytest.approx(v_outer, rel=0.03)
    assert m["dice"] == pytest.approx(2 * v_inner / (v_inner + v_outer), rel=0.03)
    assert m["ravd"] == pytest.approx(abs(v_inner - v_outer) / v_outer * 100, rel=0.03)


@pytest.mark.parametrize("axis", [0, 2])
def test_shifted_spheres_hausdorff_equals_shift_along_any_axis(axis):
    spacing = (2.0, 0.8, 1.0)
    shape = tuple(int(70 / s) for s in spacing)
    shift = 8.0
    centre = np.array([30.0, 30.0, 30.0])
    moved = centre.copy()
    moved[axis] += shift
    a, b = ball(shape, spacing, centre, 12.0), ball(shape, spacing, moved, 12.0)
    m = structure_metrics(a, b, spacing, NAN_IF_BOTH_EMPTY)
    assert m["hd"] == pytest.approx(shift, abs=max(spacing))
    # Overlap of two balls of radius R at distance d: pi (4R + d)(2R - d)^2 / 12.
    overlap = np.pi * (4 * 12 + shift) * (2 * 12 - shift) ** 2 / 12
    assert m["dice"] == pytest.approx(overlap / (4 / 3 * np.pi * 12 ** 3), rel=0.05)


def test_discs_in_2d_with_anisotropic_pixels():
    spacing = (0.3, 0.15)
    shape = (400, 800)
    a = ball(shape, spacing, (60.0, 60.0), 20.0)
    b = ball(shape, spacing, (60.0, 65.0), 20.0)
    m = structure_metrics(a, b, spacing, NAN_IF_BOTH_EMPTY)
    assert m["hd"] == pytest.approx(5.0, abs=0.3)
    assert m["ref_volume"] == pytest.approx(np.pi * 20 ** 2, rel=0.01)   # an area in 2D


def random_blob(rng, shape, level=0.05):
    mask = ndimage.gaussian_filter(rng.standard_normal(shape), 2.5) > level
    return np.pad(mask[1:-1, 1:-1, 1:-1], 1)   # off the border: SimpleITK and we then agree on the surface


def sitk_image(mask, spacing):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing[::-1])
    return image


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_masks_match_simpleitk_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    spacing = (2.5, 0.8, 1.1)
    pred, ref = random_blob(rng, (24, 36, 30)), random_blob(rng, (24, 36, 30))
    m = structure_metrics(pred, ref, spacing, NAN_IF_BOTH_EMPTY)

    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(sitk_image(ref, spacing), sitk_image(pred, spacing))
    assert m["dice"] == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-12)

    # SimpleITK's Hausdorff filter on its own face-connected contours gives surface-to-surface distances.
    contour_pred = sitk.LabelContour(sitk_image(pred, spacing), fullyConnected=False)
    contour_ref = sitk.LabelContour(sitk_image(ref, spacing), fullyConnected=False)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(contour_pred, contour_ref)
    assert m["hd"] == pytest.approx(hausdorff.GetHausdorffDistance(), rel=1e-9)
    to_ref, to_pred = surface_distances(pred, ref, spacing)
    assert (to_ref.mean() + to_pred.mean()) / 2 == pytest.approx(hausdorff.GetAverageHausdorffDistance(), rel=1e-9)

    # Brute force: exact nearest neighbours between the contour points in mm.
    points_pred = np.argwhere(sitk.GetArrayFromImage(contour_pred) > 0) * spacing
    points_ref = np.argwhere(sitk.GetArrayFromImage(contour_ref) > 0) * spacing
    brute_to_ref = cKDTree(points_ref).query(points_pred)[0]
    brute_to_pred = cKDTree(points_pred).query(points_ref)[0]
    np.testing.assert_allclose(np.sort(to_ref), np.sort(brute_to_ref), atol=1e-9)
    np.testing.assert_allclose(np.sort(to_pred), np.sort(brute_to_pred), atol=1e-9)
    pooled = np.concatenate([brute_to_ref, brute_to_pred])
    assert m["assd"] == pytest.approx(pooled.mean(), rel=1e-9)
    assert m["hd95"] == pytest.approx(max(np.percentile(brute_to_ref, 95), np.percentile(brute_to_pred, 95)))
    assert m["ravd"] == pytest.approx(abs(int(pred.sum()) - int(ref.sum())) / int(ref.sum()) * 100)


def test_hd95_is_the_larger_directed_percentile_over_surface_voxels():
    """Pins the HD95 (and ASSD) convention on a case where the usual definitions disagree by far more than a voxel.

    Pixels of 2 mm (rows) x 1 mm (columns). Reference: a one-pixel-high bar, row 2, columns 2..20 (19 pixels, all
    surface). Prediction: the same bar plus one stray pixel at row 12, column 2, 10 rows = 20 mm below the bar.
    Prediction -> reference: 19 distances of 0 and one of 20 mm. Reference -> prediction: 19 distances of 0.
    - Ours (MONAI's compute_hausdorff_distance, percentile=95): the 95th percentile of the 20 sorted directed
      distances sits at rank 0.95 x (20 - 1) = 18.05, between the 19th value (0) and the 20th (20 mm):
      0 + 0.05 x 20 = 1.0 mm; the other direction gives 0; HD95 = max(1.0, 0) = 1.0 mm.
    - DeepMind's compute_robust_hausdorff gives 18 mm: it weights each distance by its contour length, and the
      stray pixel's 4.5 mm of contour is 10 % of the prediction's 45 mm, so its 95th percentile falls on the stray
      pixel, measured between voxel corners: (11.5 - 2.5) rows x 2 mm.
    - medpy's hd95, the 95th percentile of both directions pooled (39 values, rank 36.1 of zeros), gives 0.
    ASSD pools all 39 distances: 20 / 39 mm (the mean of the two directed means would be (1 + 0) / 2 = 0.5 mm).
    """
    ref = np.zeros((16, 24), bool)
    ref[2, 2:21] = True
    pred = ref.copy()
    pred[12, 2] = True
    m = structure_metrics(pred, ref, (2.0, 1.0), NAN_IF_BOTH_EMPTY)
    assert m["hd95"] == pytest.approx(1.0, abs=1e-9)
    assert m["hd"] == pytest.approx(20.0, abs=1e-9)
    assert m["assd"] == pytest.approx(20 / 39, abs=1e-9)
    # Symmetric in its arguments: the larger directed percentile, whichever mask holds the stray pixel.
    assert structure_metrics(ref, pred, (2.0, 1.0), NAN_IF_BOTH_EMPTY)["hd95"] == pytest.approx(1.0, abs=1e-9)


def test_identical_masks_are_perfect():
    mask = ball((20, 20, 20), (1, 1, 1), (10, 10, 10), 6)
    m = structure_metrics(mask, mask, (1.0, 1.0, 1.0), NAN_IF_BOTH_EMPTY)
    assert (m["dice"], m["hd"], m["hd95"], m["assd"], m["ravd"]) == (1.0, 0.0, 0.0, 0.0, 0.0)


def test_both_empty_is_perfect_for_brats_and_undefined_otherwise():
    empty = np.zeros((10, 12, 14), bool)
    brats = structure_metrics(empty, empty, (1.0, 1.0, 1.0), BRATS)
    assert (brats["dice"], brats["hd"], brats["hd95"], brats["assd"], brats["ravd"]) == (1.0, 0.0, 0.0, 0.0, 0.0)
    generic = structure_metrics(empty, empty, (1.0, 1.0, 1.0), NAN_IF_BOTH_EMPTY)
    assert all(np.isnan(generic[k]) for k in ("dice", "hd", "hd95", "assd", "ravd"))


@pytest.mark.parametrize("convention", [BRATS, NAN_IF_BOTH_EMPTY])
def test_one_empty_mask_scores_zero_dice_and_the_image_diagonal(convention):
    spacing = (1.0, 1.0, 1.0)
    shape = (155, 240, 240)
    assert image_diagonal(shape, spacing) == pytest.approx(373.13, abs=0.01)   # BraTS' penalty value
    empty = np.zeros((20, 30, 40), bool)
    present = empty.copy()
    present[5:10, 5:10, 5:10] = True
    diagonal = image_diagonal(empty.shape, (2.0, 1.0, 0.5))
    missed = structure_metrics(empty, present, (2.0, 1.0, 0.5), convention)   # prediction empty
    assert missed["dice"] == 0.0 and missed["ravd"] == 100.0
    assert missed["hd"] == missed["hd95"] == missed["assd"] == pytest.approx(diagonal)
    hallucinated = structure_metrics(present, empty, (2.0, 1.0, 0.5), convention)   # reference empty
    assert hallucinated["dice"] == 0.0 and np.isnan(hallucinated["ravd"])
    assert hallucinated["hd"] == pytest.approx(diagonal)


def test_chaos_ignores_structures_missing_from_the_reference():
    chaos = EmptyConvention(both_empty_is_perfect=False, ignore_empty_reference=True)
    empty = np.zeros((8, 8, 8), bool)
    present = empty.copy()
    present[2:5, 2:5, 2:5] = True
    m = structure_metrics(present, empty, (1.0, 1.0, 1.0), chaos)
    assert all(np.isnan(m[k]) for k in ("dice", "hd", "hd95", "assd", "ravd"))
    assert structure_metrics(empty, present, (1.0, 1.0, 1.0), chaos)["dice"] == 0.0


def test_image_border_counts_as_surface_only_if_outside_is_background():
    mask = np.zeros((6, 6), bool)
    mask[:, :3] = True   # cut by the field of view on three sides
    with_border = surface(mask, outside_is_background=True)
    chaos_style = surface(mask, outside_is_background=False)
    assert with_border.sum() == 6 + 6 + 2 * 1   # both columns' end rows plus the inner column
    np.testing.assert_array_equal(np.argwhere(chaos_style)[:, 1], 2)   # only the column facing background
    # Shifting the cut object along the cut changes nothing when the border is not surface.
    other = np.zeros((6, 6), bool)
    other[:, :4] = True
    assert surface_distances(mask, other, (1.0, 1.0), outside_is_background=False)[0].max() == 1.0


def test_a_mask_filling_the_image_has_no_surface_without_border():
    full = np.ones((5, 5), bool)
    assert surface_distances(full, full, (1.0, 1.0), outside_is_background=False) is None
    m = structure_metrics(full, full, (1.0, 1.0), EmptyConvention(False, outside_is_background=False))
    assert m["dice"] == 1.0 and np.isnan(m["hd"])


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        surface_distances(np.ones((3, 3), bool), np.ones((3, 4), bool), (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(np.ones((3, 3), bool), np.ones((3, 3), bool), (1.0, 1.0, 1.0))
