"""nnunetv2_xdim_evaluate end to end on tiny fake nnU-Net folders (BraTS-like 3D, CAMUS 2D, CHAOS CT/MR)."""
import csv
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_xdim.evaluation.cli import main


def write_labels(path, array, spacing):
    """A label image from an array in (z, y, x) order with spacing in the same order."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    sitk.WriteImage(image, path)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def ellipsoid(shape, centre, radii):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1


BRATS_SPACING = (2.0, 1.0, 1.0)


def brats_case(rng, with_enhancing=True):
    """Oedema (2) around necrosis (1) around enhancing tumour (4), BraTS 2021 labels."""
    shape = (16, 28, 28)
    centre = (8 + rng.integers(-1, 2), 14 + rng.integers(-2, 3), 14 + rng.integers(-2, 3))
    seg = np.zeros(shape, np.uint8)
    seg[ellipsoid(shape, centre, (5, 10, 9))] = 2
    seg[ellipsoid(shape, centre, (3, 6, 6))] = 4 if with_enhancing else 1
    seg[ellipsoid(shape, centre, (2, 3, 3))] = 1
    return seg


@pytest.fixture(scope="module")
def brats_tree(tmp_path_factory):
    """References and a results folder with two trainers, five folds of two validation cases each."""
    root = tmp_path_factory.mktemp("brats")
    rng = np.random.default_rng(0)
    references = {f"BraTS2021_{i:05d}": brats_case(rng, with_enhancing=i != 3) for i in range(10)}
    for case, seg in references.items():
        write_labels(str(root / "gt" / f"{case}.nii.gz"), seg, BRATS_SPACING)
    dataset = root / "results" / "Dataset901_FakeBraTS"
    for trainer, shift in (("nnUNetTrainer", 1), ("nnUNetTrainerXDim", 2)):
        model = dataset / f"{trainer}__nnUNetPlans__3d_fullres"
        for i, (case, seg) in enumerate(references.items()):
            write_labels(str(model / f"fold_{i % 5}" / "validation" / f"{case}.nii.gz"),
                         np.roll(seg, shift, axis=2), BRATS_SPACING)
            (model / f"fold_{i % 5}" / "validation" / "summary.json").write_text("{}")
        (model / "fold_all").mkdir()
    return root


def test_compare_trainers_from_a_results_folder(brats_tree, tmp_path):
    out = tmp_path / "report"
    main(["compare", "-r", str(brats_tree / "gt"), "-p", str(brats_tree / "results" / "Dataset901_FakeBraTS"),
          "--preset", "brats", "--brats-labels", "2021", "-o", str(out), "-np", "2"])
    rows = read_csv(out / "metrics_per_case.csv")
    runs = ["nnUNetTrainer__nnUNetPlans__3d_fullres", "nnUNetTrainerXDim__nnUNetPlans__3d_fullres"]
    assert {r["run"] for r in rows} == set(runs)
    assert len(rows) == 2 * 10 * 3 and {r["structure"] for r in rows} == {"WT", "TC", "ET"}
    assert {r["fold"] for r in rows} == {"0", "1", "2", "3", "4"}
    # Case 3 has no enhancing tumour in reference or prediction: a perfect match by the BraTS convention.
    et3 = [r for r in rows if r["case"] == "BraTS2021_00003" and r["structure"] == "ET"]
    assert all(float(r["dice"]) == 1.0 and float(r["hd95"]) == 0.0 for r in et3)
    # A shift of 1 voxel (1 mm) along x bounds the Hausdorff distance of the first trainer.
    first = [r for r in rows if r["run"] == runs[0] and r["case"] != "BraTS2021_00003"]
    assert all(float(r["hd"]) == pytest.approx(1.0) for r in first)

    summary = (out / "summary.md").read_text()
    for text in runs + ["## Per structure", "### hd95 [mm]", "## Paired comparison with", "Wilcoxon"]:
        assert text in summary
    with open(out / "boxplots.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate_one_model_folder_with_selected_folds(brats_tree, tmp_path):
    model = brats_tree / "results" / "Dataset901_FakeBraTS" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    out = tmp_path / "report"
    main(["evaluate", "-r", str(brats_tree / "gt"), "-p", f"baseline={model}", "--preset", "brats",
          "--brats-labels", "2021", "--folds", "0", "1", "--allow-missing", "-o", str(out), "-np", "1"])
    rows = read_csv(out / "metrics_per_case.csv")
    assert {r["run"] for r in rows} == {"baseline"} and {r["fold"] for r in rows} == {"0", "1"}
    assert len(rows) == 4 * 3


def test_missing_predictions_are_an_error_naming_the_cases(brats_tree, tmp_path):
    model = brats_tree / "results" / "Dataset901_FakeBraTS" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    with pytest.raises(SystemExit) as error:
        main(["evaluate", "-r", str(brats_tree / "gt"), "-p", str(model), "--preset", "brats",
              "--brats-labels", "2021", "--folds", "0", "-o", str(tmp_path / "out")])
    message = str(error.value.code)
    assert "no prediction for 8 of 10" in message and "--allow-missing" in message


def test_wrong_label_convention_and_shape_mismatch_are_reported(brats_tree, tmp_path):
    gt = tmp_path / "gt"
    pred = tmp_path / "pred"
    seg = brats_case(np.random.default_rng(1))   # BraTS 2021 labels, read with the default nnunet convention
    write_labels(str(gt / "case.nii.gz"), seg, BRATS_SPACING)
    write_labels(str(pred / "case.nii.gz"), seg, BRATS_SPACING)
    with pytest.raises(SystemExit) as error:
        main(["evaluate", "-r", str(gt), "-p", str(pred), "--preset", "brats", "-o", str(tmp_path / "o")])
    assert "label(s) [4]" in str(error.value.code) and "case.nii.gz" in str(error.value.code)
    main(["evaluate", "-r", str(gt), "-p", str(pred), "--preset", "brats", "--brats-labels", "2021",
          "-o", str(tmp_path / "o"), "-np", "1"])
    assert {float(r["dice"]) for r in read_csv(tmp_path / "o" / "metrics_per_case.csv")} == {1.0}

    write_labels(str(pred / "case.nii.gz"), seg[:, :-1], BRATS_SPACING)
    with pytest.raises(SystemExit) as error:
        main(["evaluate", "-r", str(gt), "-p", str(pred), "--preset", "generic", "--labels", "1,2,3",
              "-o", str(tmp_path / "o"), "-np", "1"])
    message = str(error.value.code)
    assert "shape" in message and str(pred / "case.nii.gz") in message and str(gt / "case.nii.gz") in message

    with pytest.raises(SystemExit) as error:
        main(["evaluate", "-r", str(gt), "-p", str(pred), "--preset", "generic", "-o", str(tmp_path / "o")])
    assert "--labels or --dataset-json" in str(error.value.code)


def test_prediction_labels_outside_the_convention_are_an_error(tmp_path):
    """A label the convention lacks would score its structure Dice 0 in every case: never scored silently."""
    reference = np.zeros((6, 12, 12), np.uint8)
    reference[1:4, 2:6, 2:6] = 1
    reference[1:4, 7:10, 7:10] = 2
    write_labels(str(tmp_path / "gt" / "CT_01.nii.gz"), reference, (3.0, 1.5, 1.5))
    stray = reference.copy()
    stray[5, 0, 0] = 5
    pred = tmp_path / "pred" / "CT_01.nii.gz"
    write_labels(str(pred), stray, (3.0, 1.5, 1.5))
    with pytest.raises(SystemExit) as error:
        main(["evaluate", "-r", str(tmp_path / "gt"), "-p", str(tmp_path / "pred"), "--preset", "chaos",
              "-o", str(tmp_path / "o"), "-np", "1"])
    message = str(error.value.code)
    for text in (f"prediction {pred}", "label(s) [5]", "CHAOS labels", "1 liver", "--labels or --dataset-json"):
        assert text in message, text
    assert not (tmp_path / "o" / "metrics_per_case.csv").exists()

    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text('{"labels": {"background": 0, "liver": 1, "kidney": 2}}')
    with pytest.raises(SystemExit) as error:
        main(["evaluate", "-r", str(tmp_path / "gt"), "-p", str(tmp_path / "pred"), "--preset", "generic",
              "--dataset-json", str(dataset_json), "-o", str(tmp_path / "o"), "-np", "1"])
    message = str(error.value.code)
    for text in (f"prediction {pred}", "label(s) [5]", f"the labels of {dataset_json}", "--labels"):
        assert text in message, text

    # Named on the command line, labels may be left out on purpose: a warning naming a file, then the report.
    with pytest.warns(UserWarning, match=r"1 prediction\(s\) of run 'pred' hold label\(s\) \[2, 5\]") as record:
        main(["evaluate", "-r", str(tmp_path / "gt"), "-p", str(tmp_path / "pred"), "--preset", "generic",
              "--labels", "liver=1", "-o", str(tmp_path / "o"), "-np", "1"])
    assert str(pred) in str(record[0].message) and "--labels" in str(record[0].message)
    assert [r["dice"] for r in read_csv(tmp_path / "o" / "metrics_per_case.csv")] == ["1.0"]


def test_nnunet_predictions_scored_with_brats_2021_labels_are_an_error(tmp_path):
    seg = brats_case(np.random.default_rng(2))   # BraTS 2021 labels 1/2/4, as in the release's references
    write_labels(str(tmp_path / "gt" / "case.nii.gz"), seg, BRATS_SPACING)
    nnunet = np.choose(seg, [0, 2, 1, 0, 3]).astype(np.uint8)   # the same case in nnU-Net's labels 1/2/3
    pred = tmp_path / "pred" / "case.nii.gz"
    write_labels(str(pred), nnunet, BRATS_SPACING)
    with pytest.raises(SystemExit) as error:
        main(["evaluate", "-r", str(tmp_path / "gt"), "-p", str(tmp_path / "pred"), "--preset", "brats",
              "--brats-labels", "2021", "-o", str(tmp_path / "o"), "-np", "1"])
    message = str(error.value.code)
    for text in (f"prediction {pred}", "label(s) [3]", "BraTS 2021 labels (1 necrosis, 2 oedema, 4 enhancing)",
                 "--brats-labels"):
        assert text in message, text


def camus_view(radius, length, spacing, shape=(130, 160)):
    """A (1, H, W) CAMUS-like label map: LV cavity (1) as a half-ellipse, myocardium (2), atrium (3)."""
    r, c = np.meshgrid(np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1], indexing="ij")
    t, s = 100.0 - r, c - 48.0          # mitral plane at 100 mm, apex upwards
    seg = np.zeros(shape, np.uint8)
    seg[(t >= 0) & ((t / (length + 6)) ** 2 + (s / (radius + 6)) ** 2 <= 1)] = 2
    seg[(t < 0) & (t > -15) & (np.abs(s) < 0.8 * radius)] = 3
    seg[(t >= 0) & ((t / length) ** 2 + (s / radius) ** 2 <= 1)] = 1
    return seg[None]


def test_camus_report_with_groups_and_clinical_indices(tmp_path):
    spacing = (1.0, 0.9, 0.6)   # nnU-Net stores 2D images as one slice; the slice axis is dropped
    sizes = {"ED": (18.0, 21.0, 70.0), "ES": (13.0, 15.0, 60.0)}
    for patient in (1, 2):
        for view, index in (("2CH", 0), ("4CH", 1)):
            for instant, (a, b, length) in sizes.items():
                case = f"patient{patient:04d}_{view}_{instant}"
                radius = (a, b)[index]
                write_labels(str(tmp_path / "gt" / f"{case}.nii.gz"), camus_view(radius, length, spacing[1:]),
                             spacing)
                write_labels(str(tmp_path / "pred" / f"{case}.nii.gz"),
                             camus_view(radius * 1.05, length, spacing[1:]), spacing)
        info = tmp_path / "release" / f"patient{patient:04d}"
        info.mkdir(parents=True)
        (info / "Info_2CH.cfg").write_text("LVedv: 55.0\nLVesv: 25.0\nLVef: 55.0\n")
    out = tmp_path / "report"
    main(["evaluate", "-r", str(tmp_path / "gt"), "-p", str(tmp_path / "pred"), "--preset", "camus",
          "--camus-info", str(tmp_path / "release"), "-o", str(out), "-np", "2"])
    rows = read_csv(out / "metrics_per_case.csv")
    assert len(rows) == 8 * 4
    assert {(r["view"], r["instant"]) for r in rows} == {("2CH", "ED"), ("2CH", "ES"), ("4CH", "ED"), ("4CH", "ES")}
    assert all(0.85 < float(r["dice"]) < 1.0 for r in rows if r["structure"] == "LV_endo")

    patients = read_csv(out / "camus_clinical.csv")
    assert len(patients) == 2
    for p in patients:
        edv = 2 / 3 * np.pi * 18 * 21 * 70 / 1000
        assert float(p["EDV_ref"]) == pytest.approx(edv, rel=0.06)
        assert float(p["EDV_pred"]) == pytest.approx(edv * 1.05 ** 2, rel=0.06)
        assert float(p["EF_info"]) == 55.0
    summary = (out / "summary.md").read_text()
    for text in ["## Per view and instant", "assd (CAMUS: MAD)", "## CAMUS clinical indices", "pred vs ref",
                 "pred vs info", "ref vs info"]:
        assert text in summary


def test_chaos_points_per_task(tmp_path):
    spacing = (3.0, 1.5, 1.5)
    shape = (12, 40, 40)
    liver = ellipsoid(shape, (6, 15, 14), (4, 10, 10))
    organs = np.zeros(shape, np.uint8)
    organs[liver] = 1
    organs[ellipsoid(shape, (6, 30, 10), (3, 4, 3))] = 2
    organs[ellipsoid(shape, (6, 30, 30), (3, 4, 3))] = 3
    organs[ellipsoid(shape, (6, 12, 32), (3, 5, 4))] = 4
    write_labels(str(tmp_path / "gt" / "CT_01.nii.gz"), liver.astype(np.uint8), spacing)
    write_labels(str(tmp_path / "gt" / "MR_T2_02.nii.gz"), organs, spacing)
    write_labels(str(tmp_path / "pred" / "CT_01.nii.gz"), organs, spacing)   # kidneys/spleen: not annotated in CT
    missed_spleen = organs.copy()
    missed_spleen[missed_spleen == 4] = 0
    write_labels(str(tmp_path / "pred" / "MR_T2_02.nii.gz"), missed_spleen, spacing)
    out = tmp_path / "report"
    main(["evaluate", "-r", str(tmp_path / "gt"), "-p", f"mine={tmp_path / 'pred'}", "--preset", "chaos",
          "-o", str(out), "-np", "1"])
    rows = {(r["case"], r["structure"]): r for r in read_csv(out / "metrics_per_case.csv")}
    assert float(rows[("CT_01", "liver")]["points"]) == 100.0
    assert rows[("CT_01", "spleen")]["points"] == "nan"
    assert float(rows[("MR_T2_02", "spleen")]["points"]) == 0.0
    assert rows[("MR_T2_02", "liver")]["modality"] == "MR"
    summary = (out / "summary.md").read_text()
    assert "## CHAOS points score" in summary and "hd (CHAOS: MSSD)" in summary
    assert "| Task 2: liver, CT | 100.00 ± 0.00 (n=1) |" in summary
    assert "| Task 5: all organs, MR | 75.00 ± 0.00 (n=1) |" in summary


def test_structures_from_label_specs_and_dataset_json(tmp_path):
    from nnunetv2_xdim.evaluation.challenges import Structure, parse_label_spec, structures_from_dataset_json
    from nnunetv2_xdim.evaluation.errors import EvaluationError

    assert parse_label_spec("1,2") == (Structure("1", (1,)), Structure("2", (2,)))
    assert parse_label_spec("LV=1; epi=1,2") == (Structure("LV", (1,)), Structure("epi", (1, 2)))
    with pytest.raises(EvaluationError, match="integers"):
        parse_label_spec("LV=one")
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text('{"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], '
                            '"enhancing tumor": 3, "ignore": 4}, "regions_class_order": [1, 2, 3]}')
    assert structures_from_dataset_json(str(dataset_json)) == (
        Structure("whole tumor", (1, 2, 3)), Structure("tumor core", (2, 3)), Structure("enhancing tumor", (3,)))
