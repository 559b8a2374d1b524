"""The label-efficiency design: test set draw (groups, classes), nested subsets, folds appended after nnU-Net's, and
the refusals when the splits file and the design disagree."""
import json
import os

import pytest

from nnunetv2_xdim.label_efficiency.arms import ArmError, arms_from_args, parse_arm, twin_of
from nnunetv2_xdim.label_efficiency.design import (Design, DesignError, DesignStore, default_splits, draw_test_set,
                                                   read_case_info, read_test_list, subset)

CASES = [f"c{i:02d}" for i in range(30)]


def test_test_set_keeps_groups_together_and_classes_in_proportion():
    # 30 cases: groups of 2 (patients), classes a (18 cases) and b (12 cases)
    info = {c: {"group": f"p{i // 2}", "class": "a" if i < 18 else "b"} for i, c in enumerate(CASES)}
    test = draw_test_set(CASES, 10, seed=3, info=info)
    assert len(test) == 10
    groups_in_test = {info[c]["group"] for c in test}
    for c in CASES:  # a patient is all test or all pool
        assert (c in test) == (info[c]["group"] in groups_in_test)
    assert sum(info[c]["class"] == "a" for c in test) == 6 and sum(info[c]["class"] == "b" for c in test) == 4
    assert draw_test_set(CASES, 10, seed=3, info=info) == test  # seeded
    assert draw_test_set(CASES, 10, seed=4, info=info) != test


def test_test_set_refuses_sizes_that_leave_no_pool():
    info = {c: {"group": c} for c in CASES}
    with pytest.raises(DesignError, match="leaves no training pool"):
        draw_test_set(CASES, 30, 0, info)


def test_subsets_are_nested_within_a_repeat_and_differ_between_repeats():
    pool = CASES[10:]
    small, large = subset(pool, 5, 0, 7), subset(pool, 12, 0, 7)
    assert set(small["train"]) < set(large["train"])
    assert subset(pool, 5, 1, 7)["train"] != small["train"]
    # validation: pool cases outside the subset, or training cases when the subset is the whole pool
    assert not set(small["val"]) & set(small["train"]) and set(small["val"]) <= set(pool)
    whole = subset(pool, len(pool), 0, 7)
    assert set(whole["val"]) <= set(whole["train"])
    with pytest.raises(DesignError, match="larger than the training pool"):
        subset(pool, 21, 0, 7)


def test_folds_are_appended_after_existing_ones_and_checked(tmp_path):
    store = DesignStore(str(tmp_path), CASES)
    existing = [{"train": CASES[:20], "val": CASES[20:]}]
    (tmp_path / "splits_final.json").write_text(json.dumps(existing))
    design = Design(CASES[:8], CASES[8:], 0, "list", {})
    design = store.ensure(design, [(3, 0), (3, 1), (6, 0)])
    splits = json.loads((tmp_path / "splits_final.json").read_text())
    assert splits[0] == existing[0] and len(splits) == 4
    assert [design.fold_of(3, 0), design.fold_of(3, 1), design.fold_of(6, 0)] == [1, 2, 3]
    assert set(splits[1]["train"]) < set(splits[3]["train"])  # nested
    assert not set(splits[3]["train"]) & set(design.test)
    # a second call with more sizes appends only the new folds; the stored design reloads unchanged
    reloaded = store.ensure(store.load(), [(3, 0), (9, 0)])
    assert reloaded.fold_of(9, 0) == 4 and len(json.loads((tmp_path / "splits_final.json").read_text())) == 5
    # someone edits an appended fold: refused with the fold named
    splits = json.loads((tmp_path / "splits_final.json").read_text())
    splits[2]["train"] = splits[2]["train"][:-1]
    (tmp_path / "splits_final.json").write_text(json.dumps(splits))
    with pytest.raises(DesignError, match="fold 2 no longer matches"):
        store.load()


def test_without_a_splits_file_nnunets_own_folds_come_first(tmp_path):
    store = DesignStore(str(tmp_path), CASES)
    store.ensure(Design(CASES[:8], CASES[8:], 0, "list", {}), [(4, 0)])
    splits = json.loads((tmp_path / "splits_final.json").read_text())
    assert splits[:5] == [dict(s) for s in default_splits(CASES)] and len(splits) == 6


def test_a_crash_between_design_and_splits_is_repaired(tmp_path):
    store = DesignStore(str(tmp_path), CASES)
    design = store.ensure(Design(CASES[:8], CASES[8:], 0, "list", {}), [(4, 0)])
    # simulate a crash after the design was written but before the splits file was: drop the appended fold
    splits = json.loads((tmp_path / "splits_final.json").read_text())
    (tmp_path / "splits_final.json").write_text(json.dumps(splits[:5]))
    repaired = store.ensure(store.load(), [(4, 0)])
    assert json.loads((tmp_path / "splits_final.json").read_text())[5]["train"] == design.folds[5]["train"]
    assert repaired.folds == design.folds


def test_dry_runs_write_nothing(tmp_path):
    store = DesignStore(str(tmp_path / "pre"), CASES)
    store.ensure(Design(CASES[:8], CASES[8:], 0, "list", {}), [(4, 0)], write=False)
    assert not os.path.exists(tmp_path / "pre")


def test_case_info_and_test_lists_are_checked(tmp_path):
    (tmp_path / "info.csv").write_text("case,group,class\nc00,p1,benign\nc01,p1,normal\n")
    info = read_case_info(str(tmp_path / "info.csv"), CASES)
    assert info["c00"] == {"group": "p1", "class": "benign"} and info["c05"] == {"group": "c05"}
    # the converters' case_info.json: {"cases": {case: {...}}}
    (tmp_path / "case_info.json").write_text(json.dumps({"dataset": "x", "cases": {"c02": {"class": "m"}}}))
    assert read_case_info(str(tmp_path / "case_info.json"), CASES)["c02"] == {"group": "c02", "class": "m"}
    (tmp_path / "bad.csv").write_text("case,group\nnope,p\n")
    with pytest.raises(DesignError, match="not labelled cases"):
        read_case_info(str(tmp_path / "bad.csv"), CASES)
    (tmp_path / "test.txt").write_text("c01\nc02\nmissing\n")
    with pytest.raises(DesignError, match="missing"):
        read_test_list(str(tmp_path / "test.txt"), CASES)


def test_arms_parse_and_find_their_twins():
    arms = arms_from_args(["nnUNetTrainerXDimEfficientNetLite0", "nnUNetTrainerXDimEfficientNetLite0_Scratch"],
                          ["nnUNetTrainerXDimBaseline:nnUNetResEncUNetMPlans@10,60"], "nnUNetPlans")
    assert arms[2].plans == "nnUNetResEncUNetMPlans" and arms[2].sizes == (10, 60)
    assert arms[2].runs_at(10) and not arms[2].runs_at(5) and arms[0].runs_at(5)
    assert twin_of(arms[0], arms) is arms[1] and twin_of(arms[1], arms) is arms[0]
    assert twin_of(arms[2], arms) is None
    with pytest.raises(ArmError, match="given twice"):
        arms_from_args(["nnUNetTrainerXDimBaseline"], ["nnUNetTrainerXDimBaseline"], "nnUNetPlans")
    with pytest.raises(ArmError, match="expected TRAINER"):
        parse_arm("not a trainer!")
