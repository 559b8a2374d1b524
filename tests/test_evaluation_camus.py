"""CAMUS clinical indices: Simpson's biplane rule on analytic half-ellipsoids, agreement statistics, Info files."""
import numpy as np
import pytest

from nnunetv2_xdim.evaluation.camus_clinical import (agreement, biplane_volume, clinical_indices, lv_disks,
                                                     patient_table, read_info_files)
from nnunetv2_xdim.evaluation.challenges import camus_groups, camus_patient
from nnunetv2_xdim.evaluation.errors import EvaluationError


def apical_view(radius, length, spacing, angle_deg=0.0, myocardium=True, atrium=True):
    """Label map of one apical view: the LV cavity is a half-ellipse (semi-axes radius and length) whose base
    lies on the mitral plane at (110 mm, 50 mm), its long axis tilted by angle_deg; myocardium wraps the curved
    part, the atrium sits beyond the base. A half-ellipsoid with these two views has volume 2/3 pi a b c."""
    rows, cols = int(round(140 / spacing[0])), int(round(100 / spacing[1]))
    r, c = np.meshgrid(np.arange(rows) * spacing[0] - 110, np.arange(cols) * spacing[1] - 50, indexing="ij")
    angle = np.deg2rad(angle_deg)
    axis = np.array([-np.cos(angle), np.sin(angle)])        # from base to apex ("up" in the image when 0)
    t = r * axis[0] + c * axis[1]
    s = -r * axis[1] + c * axis[0]
    seg = np.zeros((rows, cols), np.uint8)
    cavity = (t >= 0) & ((t / length) ** 2 + (s / radius) ** 2 <= 1)
    if myocardium:
        seg[(t >= 0) & ((t / (length + 8)) ** 2 + (s / (radius + 8)) ** 2 <= 1)] = 2
    if atrium:
        seg[(t < 0) & (t > -30) & (np.abs(s) < 0.8 * radius)] = 3
    seg[cavity] = 1
    return seg


@pytest.mark.parametrize("spacing, angle", [((0.3, 0.15), 0.0), ((0.3, 0.15), 25.0), ((0.5, 0.5), -40.0)])
def test_biplane_volume_of_a_half_ellipsoid(spacing, angle):
    a, b, c = 20.0, 25.0, 80.0
    two_chamber = lv_disks(apical_view(a, c, spacing, angle), spacing)
    four_chamber = lv_disks(apical_view(b, c, spacing, angle), spacing)
    assert two_chamber[0] == pytest.approx(c, abs=1.0)                  # long axis in mm
    expected_ml = 2 / 3 * np.pi * a * b * c / 1000
    assert biplane_volume(two_chamber, four_chamber) == pytest.approx(expected_ml, rel=0.03)


def test_base_is_found_without_atrium_and_ejection_fraction_is_analytic():
    spacing = (0.3, 0.3)
    disks = {("2CH", "ED"): lv_disks(apical_view(20, 80, spacing, atrium=False), spacing),
             ("4CH", "ED"): lv_disks(apical_view(24, 80, spacing, atrium=False), spacing),
             ("2CH", "ES"): lv_disks(apical_view(14, 70, spacing, atrium=False), spacing),
             ("4CH", "ES"): lv_disks(apical_view(17, 70, spacing, atrium=False), spacing)}
    indices = clinical_indices(disks)
    edv, esv = 2 / 3 * np.pi * 20 * 24 * 80 / 1000, 2 / 3 * np.pi * 14 * 17 * 70 / 1000
    assert indices["EDV"] == pytest.approx(edv, rel=0.03)
    assert indices["ESV"] == pytest.approx(esv, rel=0.03)
    assert indices["EF"] == pytest.approx(100 * (edv - esv) / edv, abs=1.5)


def test_missing_cavity_or_view_gives_undefined_volume():
    spacing = (0.5, 0.5)
    assert lv_disks(np.zeros((50, 50), np.uint8), spacing) is None
    view = lv_disks(apical_view(20, 80, spacing), spacing)
    assert np.isnan(biplane_volume(view, None))
    assert np.isnan(clinical_indices({("2CH", "ED"): view})["EF"])


def test_stray_islands_do_not_move_the_landmarks():
    spacing = (0.5, 0.5)
    clean = apical_view(20, 80, spacing)
    noisy = clean.copy()
    noisy[5:9, 5:9] = 1   # a speck of "cavity" far from the ventricle
    assert lv_disks(noisy, spacing)[0] == pytest.approx(lv_disks(clean, spacing)[0])


def test_agreement_statistics():
    truth = np.array([50.0, 60.0, 70.0, 80.0])
    estimate = truth + np.array([1.0, 3.0, 1.0, 3.0])
    stats = agreement(estimate, truth)
    assert stats["n"] == 4 and stats["bias"] == pytest.approx(2.0) and stats["mae"] == pytest.approx(2.0)
    sd = np.std([1, 3, 1, 3], ddof=1)
    assert stats["sd"] == pytest.approx(sd)
    assert (stats["loa_low"], stats["loa_high"]) == pytest.approx((2 - 1.96 * sd, 2 + 1.96 * sd))
    assert stats["corr"] == pytest.approx(np.corrcoef(estimate, truth)[0, 1])
    assert agreement([1.0, np.nan], [np.nan, 2.0])["n"] == 0


def test_info_files_and_patient_table(tmp_path):
    for number, (edv, esv, ef) in {1: (120.0, 50.0, 58.0), 2: (90.0, 40.0, 56.0)}.items():
        folder = tmp_path / "database_nifti" / f"patient{number:04d}"
        folder.mkdir(parents=True)
        (folder / "Info_2CH.cfg").write_text(f"ED: 1\nES: 12\nNbFrame: 20\nSex: F\nAge: 61\nImageQuality: Good\n"
                                             f"LVedv: {edv}\nLVesv: {esv}\nLVef: {ef}\n")
    info = read_info_files(str(tmp_path))
    assert info == {1: {"EDV": 120.0, "ESV": 50.0, "EF": 58.0}, 2: {"EDV": 90.0, "ESV": 40.0, "EF": 56.0}}

    spacing = (0.5, 0.5)
    view = lv_disks(apical_view(20, 80, spacing), spacing)
    cases = [{"run": "A", "patient": "patient0001", "view": v, "instant": i, "lv_pred": view, "lv_ref": view}
             for v in ("2CH", "4CH") for i in ("ED", "ES")]
    (patient,) = patient_table(cases, info)
    assert patient["EDV_info"] == 120.0 and patient["EF_pred"] == pytest.approx(0.0)
    assert patient["EDV_pred"] == pytest.approx(patient["EDV_ref"])
    with pytest.raises(EvaluationError, match="Info_2CH.cfg"):
        read_info_files(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("case, groups, patient", [
    ("patient0001_2CH_ED", {"view": "2CH", "instant": "ED"}, "patient0001"),
    ("CAMUS_0420_4ch_es", {"view": "4CH", "instant": "ES"}, "CAMUS_0420"),
    ("patient0003", {"view": "unknown", "instant": "unknown"}, "patient0003"),
    ("patient0007_4CH_half5", {"view": "4CH", "instant": "half-sequence"}, "patient0007"),
])
def test_view_and_instant_come_from_the_case_name(case, groups, patient):
    assert camus_groups(case) == groups
    assert camus_patient(case) == patient
