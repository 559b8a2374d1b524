"""The CHAOS points score: metric-to-points mapping, missed and unannotated organs, task aggregation."""
import math

import numpy as np
import pytest

from nnunetv2_xdim.evaluation.challenges import chaos_groups
from nnunetv2_xdim.evaluation.chaos_score import add_points, metric_points, task_scores


# Literal points from the equations of CHAOS_Metrics_and_Evaluation_Method.pdf, section 2 (eq. 6: DICE, 0 below
# 0.8, else 100 x DICE; eqs. 7-9: 100 - value / threshold x 100 for RAVD 5 %, ASSD 15 mm, MSSD 60 mm, 0 beyond).
@pytest.mark.parametrize("metric, value, points", [
    ("dice", 1.0, 100.0), ("dice", 0.9, 90.0), ("dice", 0.8, 80.0), ("dice", 0.7999, 0.0), ("dice", 0.5, 0.0),
    ("ravd", 0.0, 100.0), ("ravd", 2.5, 50.0), ("ravd", 5.0, 0.0), ("ravd", 40.0, 0.0),
    ("assd", 0.0, 100.0), ("assd", 3.0, 80.0), ("assd", 15.0, 0.0), ("assd", 99.0, 0.0),
    ("hd", 0.0, 100.0), ("hd", 15.0, 75.0), ("hd", 60.0, 0.0), ("hd", 373.0, 0.0),
    ("hd", float("nan"), 0.0), ("dice", float("nan"), 0.0),
])
def test_metric_points_follow_the_organisers_equations(metric, value, points):
    assert metric_points(metric, value) == pytest.approx(points)


@pytest.mark.parametrize("metric, threshold", [("ravd", 5.0), ("assd", 15.0), ("hd", 60.0)])
def test_a_distance_at_its_threshold_scores_plus_zero(metric, threshold):
    points = metric_points(metric, threshold)
    assert points == 0.0 and math.copysign(1.0, points) == 1.0 and repr(points) == "0.0"


def test_the_organisers_sample_case():
    # The sample submission of the organisers' repository: DICE 0.978, RAVD 0.665 %, ASSD 0.734 mm, MSSD 14 mm.
    # Points by hand: 100 x 0.978 = 97.8; 100 - 0.665/5 x 100 = 86.70; 100 - 0.734/15 x 100 = 95.11;
    # 100 - 14/60 x 100 = 76.67; their mean 89.07.
    r = row("CT_1", "liver", "CT", dice=0.978, ravd=0.665, assd=0.734, hd=14.0)
    add_points(r)
    assert r["points_dice"] == pytest.approx(97.8, abs=0.005)
    assert r["points_ravd"] == pytest.approx(86.70, abs=0.005)
    assert r["points_assd"] == pytest.approx(95.11, abs=0.005)
    assert r["points_mssd"] == pytest.approx(76.67, abs=0.005)
    assert r["points"] == pytest.approx(89.07, abs=0.005)


def row(case, organ, modality, dice, ravd, assd, hd, ref_volume=1000.0, pred_volume=1000.0, run="A"):
    return {"run": run, "fold": "", "case": case, "structure": organ, "modality": modality, "dice": dice,
            "ravd": ravd, "assd": assd, "hd": hd, "ref_volume": ref_volume, "pred_volume": pred_volume}


def test_organ_points_average_the_four_metric_points():
    r = row("CT_1", "liver", "CT", dice=0.96, ravd=1.0, assd=1.5, hd=12.0)
    add_points(r)
    assert (r["points_dice"], r["points_ravd"], r["points_assd"], r["points_mssd"]) == pytest.approx((96, 80, 90, 80))
    assert r["points"] == pytest.approx(86.5)


def test_missed_organ_scores_zero_and_unannotated_organ_is_not_scored():
    missed = row("MR_1", "spleen", "MR", dice=0.0, ravd=100.0, assd=5.0, hd=5.0, pred_volume=0.0)
    add_points(missed)
    assert missed["points"] == 0.0 and missed["points_assd"] == 0.0   # even if the distance fallback is small
    unannotated = row("CT_1", "spleen", "CT", *[np.nan] * 4, ref_volume=0.0)
    add_points(unannotated)
    assert np.isnan(unannotated["points"])


def test_task_scores_follow_the_chaos_tasks():
    rows = [row("CT_1", "liver", "CT", 1.0, 0.0, 0.0, 0.0),                 # 100 points
            row("CT_1", "spleen", "CT", *[np.nan] * 4, ref_volume=0.0),     # not annotated in CT
            row("MR_1", "liver", "MR", 0.9, 2.5, 7.5, 30.0),                 # (90 + 50 + 50 + 50) / 4 = 60
            row("MR_1", "spleen", "MR", 1.0, 0.0, 0.0, 0.0)]                 # 100 points
    for r in rows:
        add_points(r)
    scores = {t["name"]: t for t in task_scores(rows)}
    assert scores["Task 2: liver, CT"]["mean"] == pytest.approx(100)
    assert scores["Task 3: liver, MR"]["mean"] == pytest.approx(60)
    assert scores["Task 1: liver, CT+MR"]["mean"] == pytest.approx(80)
    assert scores["Task 5: all organs, MR"]["mean"] == pytest.approx(80)   # one case: mean of its two organs
    assert scores["Task 4: all organs, CT+MR"]["mean"] == pytest.approx((100 + 80) / 2)
    assert scores["spleen (MR)"]["n"] == 1 and "spleen (CT)" not in scores


@pytest.mark.parametrize("case, modality", [("CHAOS_CT_01", "CT"), ("ct21", "CT"), ("MR_T1in_34", "MR"),
                                            ("chaos_t2spir_005", "MR"), ("case_0001", "unknown")])
def test_modality_is_read_from_the_case_name(case, modality):
    assert chaos_groups(case) == {"modality": modality}
