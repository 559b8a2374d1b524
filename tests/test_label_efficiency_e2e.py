"""nnunetv2_xdim_label_efficiency end to end on a small generated 2D dataset, through nnU-Net's own commands:
planning at a coarser target spacing, training, prediction of the test set, scoring, the report; then a second
identical call that trains nothing, a changed budget that trains anew into its own folder, and the refusals."""
import csv
import json
import os

import pytest

from e2e_util import nnunet_env, run
from nnunetv2_xdim.synthetic import make_dataset

DATASET_ID = 951
COMMAND = "nnunetv2_xdim_label_efficiency"
ARMS = ["-tr", "nnUNetTrainerXDimEfficientNetLite0", "nnUNetTrainerXDimBaseline"]


def call(env, out, *extra, check=True):
    cmd = [COMMAND, "-d", str(DATASET_ID), "-c", "2d", "-o", out, "--sizes", "2", "--repeats", "2",
           "--target-spacing", "2", "2", "--device", "cpu", "-np", "1", *ARMS, *extra]
    if check:
        return run(cmd, env, timeout=1200).stdout
    import subprocess
    return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("le"))
    env = nnunet_env(root, epochs=1, iterations=2, val_iterations=1)
    env["nnUNet_n_proc_DA"] = "0"  # training in-process; the study unsets it for nnU-Net's planner itself
    make_dataset(env["nnUNet_raw"], DATASET_ID, "LabelEff", (64, 48), n_train=14, seed=5)
    out = os.path.join(root, "study")
    first = call(env, out, "--test-size", "6", "--seed", "1")
    return env, out, first


def test_runs_are_trained_predicted_scored_and_reported(study):
    env, out, first = study
    with open(os.path.join(out, "runs.csv")) as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["trainer"], r["repeat"]) for r in rows) == [
        ("nnUNetTrainerXDimBaseline", "0"), ("nnUNetTrainerXDimBaseline", "1"),
        ("nnUNetTrainerXDimEfficientNetLite0", "0"), ("nnUNetTrainerXDimEfficientNetLite0", "1")]
    for r in rows:
        assert r["plans"] == "nnUNetPlans_spacing2x2" and r["n"] == "2" and r["n_test"] == "6"
        assert (r["epochs"], r["iterations"], r["val_iterations"], r["tta"]) == ("1", "2", "1", "True")
        assert 0.0 <= float(r["dice_mean"]) <= 1.0 and float(r["train_s"]) > 0 and r["machine"]
        assert len(r["dice_per_case"].split(";")) == 6
    # the two repeats are different subsets, the same for both arms; the test set is never trained on
    pre = os.path.join(env["nnUNet_preprocessed"], "Dataset951_LabelEff")
    design = json.load(open(os.path.join(pre, "label_efficiency.json")))
    splits = json.load(open(os.path.join(pre, "splits_final.json")))
    assert len(splits) == 7 and {r["fold"] for r in rows} == {"5", "6"}
    assert splits[5]["train"] != splits[6]["train"]
    assert not set(design["test"]) & {c for s in splits[5:] for c in s["train"] + s["val"]}
    # predictions come back at the images' own size (the plans train at 2 mm, the images are 1 mm)
    pred = os.path.join(out, "predictions", "e1x2v1", "nnUNetTrainerXDimBaseline__nnUNetPlans_spacing2x2__2d",
                        "fold_5", design["test"][0] + ".png")
    import SimpleITK as sitk
    assert sitk.ReadImage(pred).GetSize() == (48, 64)
    summary = open(os.path.join(out, "summary.md")).read()
    assert "| EfficientNetLite0 | nnU-Net default |" in summary and "label efficiency" in summary
    assert os.path.getsize(os.path.join(out, "dice_vs_n.png")) > 1000
    assert "[4/4]" in first


def test_a_second_identical_call_trains_nothing(study):
    env, out, _ = study
    again = call(env, out)  # the stored test set is reused when no test option is given
    assert "training" not in again and "predicting" not in again


def test_a_changed_budget_trains_anew_into_its_own_folder(study):
    env, out, _ = study
    text = call(env, out, "--iterations", "3", "--max-runs", "1")
    assert "training" in text and "stopping after 1 run" in text
    assert os.path.isdir(os.path.join(out, "models", "e1x3v1"))
    assert os.path.isfile(os.path.join(out, "models", "e1x2v1", "Dataset951_LabelEff",
                                       "nnUNetTrainerXDimBaseline__nnUNetPlans_spacing2x2__2d", "fold_5",
                                       "checkpoint_final.pth"))


def test_dry_run_prints_the_plan_and_an_estimate(study):
    env, out, _ = study
    text = call(env, out, "--sizes", "4", "--dry-run")
    assert "to train" in text and "nnUNetv2_train 951 2d 7" in text and "time estimate" in text
    assert "(measured)" in text  # both arms have finished runs at this budget: their time is the estimate
    text = call(env, out, "--sizes", "4", "--dry-run", "-tr", "nnUNetTrainerXDimEfficientNetLite0_Scratch")
    assert "s per iteration" in text  # an arm without a finished run: its network is timed
    # nothing written: the fold for N=4 is not in the splits file
    pre = os.path.join(env["nnUNet_preprocessed"], "Dataset951_LabelEff")
    assert len(json.load(open(os.path.join(pre, "splits_final.json")))) == 7


@pytest.mark.parametrize("extra, message", [
    (["--sizes", "9"], "N = 9 is larger than the training pool (8 cases"),
    (["-tr", "nnUNetTrainerXDimNoSuchNet"], "unknown trainer nnUNetTrainerXDimNoSuchNet"),
    (["--test-size", "5"], "another test set"),
])
def test_refusals(study, extra, message):
    env, out, _ = study
    p = call(env, out, *extra, check=False)
    assert p.returncode != 0 and message in p.stdout, p.stdout[-2000:]


def test_a_splits_file_changed_behind_its_back_is_refused(study):
    env, out, _ = study
    path = os.path.join(env["nnUNet_preprocessed"], "Dataset951_LabelEff", "splits_final.json")
    original = open(path).read()
    splits = json.loads(original)
    splits[5]["train"] = splits[6]["train"]
    try:
        with open(path, "w") as f:
            json.dump(splits, f)
        p = call(env, out, check=False)
        assert p.returncode != 0 and "fold 5 no longer matches" in p.stdout
    finally:
        with open(path, "w") as f:
            f.write(original)
