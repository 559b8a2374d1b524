"""CAMUS converter and exporter on generated 2019 (.mhd/.raw) and 2023 (NIfTI) release trees."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_xdim.dataset_conversion import camus
from nnunetv2_xdim.dataset_conversion._common import ConversionError, DatasetOptions

from challenge_fixtures import CAMUS_SIZE, SPACING_2019, make_camus_2019, make_camus_2023  # noqa: E402
from challenge_fixtures import write_image as _write  # noqa: E402
from e2e_util import nnunet_verify  # noqa: E402

H, W = CAMUS_SIZE


def options(tmp_path, dataset_id=504, overwrite=False):
    return DatasetOptions(raw_root=str(tmp_path / "raw"), preprocessed_root=str(tmp_path / "pre"),
                          dataset_id=dataset_id, name="CAMUS", overwrite=overwrite, num_processes=1)


def _as_predictions(dataset, pred_dir):
    """The converted labels, named as nnUNetv2_predict names its output."""
    os.makedirs(pred_dir)
    for sub in ("labelsTr", "labelsTs"):
        if os.path.isdir(os.path.join(dataset, sub)):
            for n in os.listdir(os.path.join(dataset, sub)):
                shutil.copy(os.path.join(dataset, sub, n), pred_dir)
    return pred_dir


def _assert_same_image(a_path, b_path):
    a, b = sitk.ReadImage(a_path), sitk.ReadImage(b_path)
    assert a.GetSize() == b.GetSize() and a.GetPixelID() == b.GetPixelID()
    assert a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin()
    assert a.GetDirection() == b.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_2019_convert_and_round_trip(tmp_path):
    src = make_camus_2019(str(tmp_path / "camus"))
    ds = camus.convert(src, options(tmp_path))
    dj = json.load(open(os.path.join(ds, "dataset.json")))
    assert dj["numTraining"] == 24 and dj["labels"]["left_atrium"] == 3
    assert sorted(os.listdir(os.path.join(ds, "imagesTs")))[0] == "patient0451_2CH_ED_0000.nii.gz"
    assert not os.path.exists(os.path.join(ds, "labelsTs"))
    img = sitk.ReadImage(os.path.join(ds, "imagesTr", "patient0001_4CH_ES_0000.nii.gz"))
    assert img.GetDimension() == 2 and img.GetSize() == (W, H)
    assert np.allclose(img.GetSpacing(), SPACING_2019[:2]) and np.allclose(img.GetOrigin(), (1.5, -2.25))

    # the three subGroup lists are the three folds, grouped by patient
    splits = json.load(open(os.path.join(ds, "splits_final.json")))
    assert splits == json.load(open(tmp_path / "pre" / "Dataset504_CAMUS" / "splits_final.json"))
    assert len(splits) == 3
    for k, fold in enumerate(splits):
        val_patients = open(os.path.join(src, "listSubGroups", f"subGroup{k + 1}_testing.txt")).read().split()
        assert sorted({c[:11] for c in fold["val"]}) == sorted(val_patients)
        assert not {c[:11] for c in fold["train"]} & set(val_patients)
        assert len(fold["train"]) + len(fold["val"]) == 24

    out = camus.export(_as_predictions(ds, str(tmp_path / "pred")), str(tmp_path / "sub"), ds)
    assert len(out) == 24
    for path in out:
        pid, name = path.split(os.sep)[-2:]
        assert name.endswith(".mhd") and os.path.isfile(path[:-4] + ".raw")
        _assert_same_image(path, os.path.join(src, "training", pid, name[:-4] + "_gt.mhd"))
        assert f"ElementDataFile = {name[:-4]}.raw" in open(path).read()


def test_2019_test_patients_export_with_image_header(tmp_path):
    src = make_camus_2019(str(tmp_path / "camus"))
    ds = camus.convert(src, options(tmp_path))
    pred = tmp_path / "pred"
    os.makedirs(pred)
    for n in os.listdir(os.path.join(ds, "imagesTs")):  # pretend: thresholded images as predictions
        img = sitk.ReadImage(os.path.join(ds, "imagesTs", n))
        seg = sitk.GetImageFromArray((sitk.GetArrayFromImage(img) % 4).astype(np.uint8))
        seg.CopyInformation(img)
        sitk.WriteImage(seg, str(pred / n.replace("_0000", "")))
    out = camus.export(str(pred), str(tmp_path / "sub"), ds)
    assert len(out) == 8
    ref = sitk.ReadImage(os.path.join(src, "testing", "patient0452", "patient0452_4CH_ED.mhd"))
    got = sitk.ReadImage(str(tmp_path / "sub" / "patient0452" / "patient0452_4CH_ED.mhd"))
    assert got.GetSize() == ref.GetSize() == (W, H, 1)
    assert got.GetSpacing() == ref.GetSpacing() and got.GetOrigin() == ref.GetOrigin()


def test_2023_convert_split_half_sequence_and_round_trip(tmp_path):
    src = make_camus_2023(str(tmp_path / "c23"))
    ds = camus.convert(src, options(tmp_path), n_folds=3, half_sequence=True)
    # 6 train+val patients x 2 views x (ED, ES, two inner half-sequence frames); test patients to imagesTs
    assert json.load(open(os.path.join(ds, "dataset.json")))["numTraining"] == 6 * 2 * 4
    assert len(os.listdir(os.path.join(ds, "labelsTs"))) == 2 * 4
    assert os.path.isfile(os.path.join(ds, "imagesTr", "patient0001_2CH_half01_0000.nii.gz"))
    assert not os.path.exists(os.path.join(ds, "imagesTr", "patient0001_2CH_half00_0000.nii.gz"))
    hs = sitk.ReadImage(os.path.join(ds, "labelsTr", "patient0003_4CH_half02.nii.gz"))
    seq = sitk.ReadImage(os.path.join(src, "CAMUS_public", "database_nifti", "patient0003",
                                      "patient0003_4CH_half_sequence_gt.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(hs), sitk.GetArrayFromImage(seq)[2])

    splits = json.load(open(os.path.join(ds, "splits_final.json")))
    assert len(splits) == 4  # 3 seeded folds by patient + the official training/validation split
    assert sorted({c[:11] for c in splits[3]["val"]}) == ["patient0005", "patient0006"]
    for fold in splits:
        assert not {c[:11] for c in fold["train"]} & {c[:11] for c in fold["val"]}
        assert not [c for c in fold["val"] if "_half" in c]  # extra frames only train
        assert not [c for c in fold["train"] + fold["val"] if c.startswith(("patient0007", "patient0008"))]
    assert sorted({c[:11] for f in splits[:3] for c in f["val"]}) == [f"patient000{i}" for i in range(1, 7)]

    out = camus.export(_as_predictions(ds, str(tmp_path / "pred")), str(tmp_path / "sub"), ds)
    assert len(out) == 8 * 4  # half-sequence frames are skipped
    for path in out:
        pid, name = path.split(os.sep)[-2:]
        assert name.endswith(".nii.gz")
        _assert_same_image(path, os.path.join(src, "CAMUS_public", "database_nifti", pid,
                                              name[:-7] + "_gt.nii.gz"))


def test_cli_convert_and_export(tmp_path, monkeypatch, capsys):
    src = make_camus_2023(str(tmp_path / "c23"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    camus.main(["-i", src, "-d", "514", "--folds", "2", "-np", "2"])
    ds = tmp_path / "raw" / "Dataset514_CAMUS"
    assert (ds / "splits_final.json").is_file() and "will copy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        camus.main(["-i", src, "-d", "514", "--folds", "2"])
    assert e.value.code == 1 and "already exists" in capsys.readouterr().err
    camus.export_main(["-i", _as_predictions(str(ds), str(tmp_path / "pred")), "-o", str(tmp_path / "sub"),
                       "-d", "514", "-np", "2"])
    assert len(os.listdir(tmp_path / "sub")) == 8


def test_nnunet_accepts_dataset(tmp_path, monkeypatch):
    ds = camus.convert(make_camus_2023(str(tmp_path / "c23")), options(tmp_path), n_folds=3, half_sequence=True)
    nnunet_verify(ds, monkeypatch)


def test_nnunet_planning_keeps_splits(tmp_path):
    """A real (tiny) nnUNetv2_plan_and_preprocess run leaves the converter's splits_final.json as it was."""
    ds = camus.convert(make_camus_2019(str(tmp_path / "c")), options(tmp_path))
    splits = tmp_path / "pre" / "Dataset504_CAMUS" / "splits_final.json"
    before = splits.read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_n_proc_DA"}  # 0 crashes 2.8.1's planner
    env.update(nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "results"))
    # nnU-Net's own entry point; its worker pools fork instead of spawn so that each worker does not
    # import torch again (tens of seconds on a loaded 2-core runner)
    script = ("import multiprocessing, sys\n"
              "get_context = multiprocessing.get_context\n"
              "multiprocessing.get_context = lambda *_: get_context('fork')\n"
              "from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import plan_and_preprocess_entry\n"
              "sys.argv = ['nnUNetv2_plan_and_preprocess', '-d', '504', '-c', '2d', '-np', '1']\n"
              "plan_and_preprocess_entry()\n")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "pre" / "Dataset504_CAMUS" / "nnUNetPlans_2d").is_dir()
    assert splits.read_bytes() == before
    assert json.loads(before) == json.load(open(os.path.join(ds, "splits_final.json")))

@pytest.mark.parametrize("command", ["nnunetv2_xdim_convert_camus", "nnunetv2_xdim_export_camus"])
def test_console_command(command):
    run = subprocess.run([command, "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and f"usage: {command}" in run.stdout


def test_without_split_lists_folds_are_made_by_patient(tmp_path, capsys):
    src = make_camus_2019(str(tmp_path / "c"))
    shutil.rmtree(os.path.join(src, "listSubGroups"))
    ds = camus.convert(src, options(tmp_path), n_folds=2)
    assert "no subGroup*_testing.txt lists" in capsys.readouterr().err
    splits = json.load(open(os.path.join(ds, "splits_final.json")))
    assert len(splits) == 2 and sorted(c for f in splits for c in f["val"]) == sorted(splits[0]["train"] +
                                                                                      splits[0]["val"])
    for fold in splits:
        assert not {c[:11] for c in fold["train"]} & {c[:11] for c in fold["val"]}
    with pytest.raises(ConversionError, match="--half-sequence needs the 2023 NIfTI release"):
        camus.convert(src, options(tmp_path, overwrite=True), half_sequence=True)


# ------------------------------------------------------------------------------------------- bad input


def _fails(tmp_path, src, match, **kw):
    with pytest.raises(ConversionError, match=match):
        camus.convert(src, options(tmp_path), **kw)
    raw = tmp_path / "raw"
    assert not raw.exists() or not os.listdir(raw), "nothing may be left behind"


def test_missing_image(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"))
    os.remove(os.path.join(src, "training", "patient0003", "patient0003_4CH_ES.mhd"))
    _fails(tmp_path, src, r"missing image .*patient0003_4CH_ES\.mhd")


def test_missing_one_mask(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"))
    os.remove(os.path.join(src, "training", "patient0002", "patient0002_2CH_ED_gt.mhd"))
    _fails(tmp_path, src, r"patient0002: some ED/ES frames have a _gt\.mhd label and some not")


def test_training_patient_without_masks(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"))
    for n in os.listdir(os.path.join(src, "training", "patient0004")):
        if "_gt" in n:
            os.remove(os.path.join(src, "training", "patient0004", n))
    _fails(tmp_path, src, r"missing labels in .*patient0004")


def test_shape_mismatch(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"))
    _write(np.zeros((1, H + 1, W), np.uint8),
           os.path.join(src, "training", "patient0005", "patient0005_2CH_ES_gt.mhd"), SPACING_2019)
    _fails(tmp_path, src, r"patient0005_2CH_ES_gt\.mhd: size \(16, 13\) instead of \(16, 12\)")


def test_geometry_mismatch(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"))
    _write(np.zeros((1, H, W), np.uint8),
           os.path.join(src, "training", "patient0005", "patient0005_2CH_ES_gt.mhd"), (0.5, 0.154, 1.54))
    _fails(tmp_path, src, r"patient0005_2CH_ES_gt\.mhd: spacing .* instead of")


def test_unexpected_labels_and_nothing_half_written(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"))
    bad = np.zeros((1, H, W), np.uint8)
    bad[0, 0, 0] = 7
    _write(bad, os.path.join(src, "training", "patient0006", "patient0006_4CH_ES_gt.mhd"), SPACING_2019)
    _fails(tmp_path, src, r"patient0006_4CH_ES_gt\.mhd: unexpected label value\(s\) \[7\]")
    assert not (tmp_path / "pre").exists()


def test_duplicate_ids(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"), test=("patient0001",))
    _fails(tmp_path, src, r"duplicate case id: patient0001")


def test_empty_and_wrong_folders(tmp_path):
    os.makedirs(tmp_path / "empty")
    _fails(tmp_path, str(tmp_path / "empty"), r"holds no CAMUS release")
    _fails(tmp_path, str(tmp_path / "nowhere"), r"does not exist")
    os.makedirs(tmp_path / "c" / "training")
    _fails(tmp_path, str(tmp_path / "c"), r"no patientNNNN folders in .*training")


def test_split_list_names_unknown_patient(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"))
    with open(os.path.join(src, "listSubGroups", "subGroup2_training.txt"), "a") as f:
        f.write("patient0099\n")
    _fails(tmp_path, src, r"subGroup2_training\.txt lists patient0099, which is not in .*training")


def test_2023_unlisted_patient(tmp_path):
    src = make_camus_2023(str(tmp_path / "c"))
    shutil.copytree(os.path.join(src, "CAMUS_public", "database_nifti", "patient0001"),
                    os.path.join(src, "CAMUS_public", "database_nifti", "patient0042"))
    _fails(tmp_path, src, r"patient0042 .* is in none of the lists")


def test_existing_dataset_needs_overwrite(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"))
    ds = camus.convert(src, options(tmp_path))
    marker = os.path.join(ds, "marker")
    open(marker, "w").close()
    with pytest.raises(ConversionError, match="already exists; pass --overwrite"):
        camus.convert(src, options(tmp_path))
    assert os.path.exists(marker)
    camus.convert(src, options(tmp_path, overwrite=True))
    assert not os.path.exists(marker)
    assert [n for n in os.listdir(tmp_path / "raw")] == ["Dataset504_CAMUS"]


def test_same_id_other_name_is_refused(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"))
    os.makedirs(tmp_path / "raw" / "Dataset504_Other")
    with pytest.raises(ConversionError, match="dataset id 504 is already taken"):
        camus.convert(src, options(tmp_path))


def test_exporter_bad_input(tmp_path):
    src = make_camus_2019(str(tmp_path / "c"))
    ds = camus.convert(src, options(tmp_path))
    pred = _as_predictions(ds, str(tmp_path / "pred"))
    camus.export(pred, str(tmp_path / "sub"), ds)
    with pytest.raises(ConversionError, match="already exist"):
        camus.export(pred, str(tmp_path / "sub"), ds)
    camus.export(pred, str(tmp_path / "sub"), ds, overwrite=True)

    wrong = sitk.GetImageFromArray(np.zeros((H, W + 2), np.uint8))
    sitk.WriteImage(wrong, os.path.join(pred, "patient0001_2CH_ED.nii.gz"))
    with pytest.raises(ConversionError, match=r"patient0001_2CH_ED\.nii\.gz: shape \(12, 18\) instead of"):
        camus.export(pred, str(tmp_path / "sub2"), ds)
    assert os.listdir(tmp_path / "sub2") == [], "nothing may be half-written"
    sitk.WriteImage(wrong, os.path.join(pred, "patient0999_2CH_ED.nii.gz"))
    with pytest.raises(ConversionError, match="patient0999_2CH_ED is not an ED/ES case"):
        camus.export(pred, str(tmp_path / "sub3"), ds)
    with pytest.raises(ConversionError, match="no .nii.gz predictions"):
        camus.export(str(tmp_path / "c"), str(tmp_path / "sub4"), ds)
