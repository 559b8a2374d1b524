"""BraTS 2022 converter and exporter on generated trees with the 2021 and the 2023+ naming."""
import filecmp
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_xdim.dataset_conversion import brats2022
from nnunetv2_xdim.dataset_conversion._common import ConversionError, DatasetOptions

from challenge_fixtures import BRATS_SHAPE as SHAPE  # noqa: E402
from challenge_fixtures import make_brats  # noqa: E402
from challenge_fixtures import write_brats_image as _write  # noqa: E402
from e2e_util import nnunet_verify  # noqa: E402


TRAIN_2021 = [f"BraTS2021_{i:05d}" for i in (0, 2, 3, 5)]
VAL_2021 = ["BraTS2021_00001", "BraTS2021_00013"]
TRAIN_2023 = ["BraTS-GLI-00000-000", "BraTS-GLI-00000-001", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000",
              "BraTS-GLI-00003-001", "BraTS-GLI-00005-000"]


def options(tmp_path, overwrite=False, num_processes=1):
    return DatasetOptions(raw_root=str(tmp_path / "raw"), preprocessed_root=str(tmp_path / "pre"), dataset_id=501,
                          name="BraTS2022", overwrite=overwrite, num_processes=num_processes)


def _assert_same(a_path, b_path):
    a, b = sitk.ReadImage(a_path), sitk.ReadImage(b_path)
    assert a.GetSpacing() == b.GetSpacing() and a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_2021_naming_convert_and_round_trip(tmp_path):
    train = make_brats(str(tmp_path / "TrainingData"), TRAIN_2021, "2021")
    val = make_brats(str(tmp_path / "ValidationData"), VAL_2021, "2021", labelled=False)
    ds = brats2022.convert([train, val], options(tmp_path, num_processes=2), n_folds=2)
    dj = json.load(open(os.path.join(ds, "dataset.json")))
    assert dj["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    assert dj["regions_class_order"] == [1, 2, 3] and dj["numTraining"] == 4
    assert dj["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert sorted(os.listdir(os.path.join(ds, "imagesTs"))) == sorted(
        f"{c}_{i:04d}.nii.gz" for c in VAL_2021 for i in range(4))
    assert filecmp.cmp(os.path.join(train, "BraTS2021_00003", "BraTS2021_00003_flair.nii.gz"),
                       os.path.join(ds, "imagesTr", "BraTS2021_00003_0003.nii.gz"), shallow=False)
    src = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(train, "BraTS2021_00005", "BraTS2021_00005_seg.nii.gz")))
    got = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(ds, "labelsTr", "BraTS2021_00005.nii.gz")))
    assert np.array_equal(got == 3, src == 4) and np.array_equal(got == 2, src == 1)  # ET and core nested
    assert np.array_equal(got == 1, src == 2)

    pred = tmp_path / "pred"
    shutil.copytree(os.path.join(ds, "labelsTr"), pred)
    out = brats2022.export(str(pred), str(tmp_path / "sub"), raw=[train], num_processes=2)
    assert [os.path.basename(p) for p in out] == [f"{c}.nii.gz" for c in TRAIN_2021]
    for c in TRAIN_2021:
        _assert_same(str(tmp_path / "sub" / f"{c}.nii.gz"), os.path.join(train, c, f"{c}_seg.nii.gz"))
        assert sitk.ReadImage(str(tmp_path / "sub" / f"{c}.nii.gz")).GetPixelID() == sitk.sitkUInt8


def test_2023_naming_groups_time_points(tmp_path):
    train = make_brats(str(tmp_path / "train"), TRAIN_2023, "2023")
    ds = brats2022.convert([train], options(tmp_path), n_folds=2)
    splits = json.load(open(tmp_path / "pre" / "Dataset501_BraTS2022" / "splits_final.json"))
    for fold in splits:
        patients = [{c.rsplit("-", 1)[0] for c in fold[side]} for side in ("train", "val")]
        assert not patients[0] & patients[1]
        assert len(fold["train"]) + len(fold["val"]) == 6
    pred = tmp_path / "pred"
    shutil.copytree(os.path.join(ds, "labelsTr"), pred)
    brats2022.export(str(pred), str(tmp_path / "sub"))
    for c in TRAIN_2023:
        _assert_same(str(tmp_path / "sub" / f"{c}.nii.gz"), os.path.join(train, c, f"{c}-seg.nii.gz"))


def test_channels_within_tolerance_get_one_grid(tmp_path):
    train = make_brats(str(tmp_path / "t"), TRAIN_2021[:2], "2021")
    path = os.path.join(train, "BraTS2021_00000", "BraTS2021_00000_t2.nii.gz")
    img = sitk.ReadImage(path)
    img.SetOrigin((1e-5, -239.0, 0.0))
    sitk.WriteImage(img, path)
    ds = brats2022.convert([train], options(tmp_path), n_folds=2)
    t1, t2 = (sitk.ReadImage(os.path.join(ds, "imagesTr", f"BraTS2021_00000_{i:04d}.nii.gz")) for i in (0, 2))
    assert t1.GetOrigin() == t2.GetOrigin()
    assert np.array_equal(sitk.GetArrayFromImage(t2), sitk.GetArrayFromImage(img))


def test_cli(tmp_path, capsys):
    train = make_brats(str(tmp_path / "t"), TRAIN_2021[:2], "2021")
    brats2022.main(["-i", train, "-o", str(tmp_path / "raw"), "--preprocessed-dir", str(tmp_path / "pre"),
                    "--folds", "2", "-np", "1"])
    pred = str(tmp_path / "raw" / "Dataset501_BraTS2022" / "labelsTr")
    brats2022.export_main(["-i", pred, "-o", str(tmp_path / "sub"), "--convention", "2023"])
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "sub" / "BraTS2021_00000.nii.gz")))
    assert set(np.unique(seg)) == {0, 1, 2, 3}
    with pytest.raises(SystemExit):
        brats2022.export_main(["-i", pred, "-o", str(tmp_path / "sub")])
    assert "already exist" in capsys.readouterr().err


def test_nnunet_accepts_dataset(tmp_path, monkeypatch):
    ds = brats2022.convert([make_brats(str(tmp_path / "t"), TRAIN_2023, "2023")], options(tmp_path), n_folds=2)
    nnunet_verify(ds, monkeypatch)


@pytest.mark.parametrize("command", ["nnunetv2_xdim_convert_brats2022", "nnunetv2_xdim_export_brats2022"])
def test_console_command(command):
    run = subprocess.run([command, "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and f"usage: {command}" in run.stdout


# ------------------------------------------------------------------------------------------- bad input


def _fails(tmp_path, inputs, match, num_processes=1):
    with pytest.raises(ConversionError, match=match):
        brats2022.convert(inputs, options(tmp_path, num_processes=num_processes), n_folds=2)
    assert not (tmp_path / "raw").exists() or not os.listdir(tmp_path / "raw"), "nothing may be left behind"


def test_missing_modality(tmp_path):
    train = make_brats(str(tmp_path / "t"), TRAIN_2021, "2021")
    os.remove(os.path.join(train, "BraTS2021_00003", "BraTS2021_00003_t1ce.nii.gz"))
    _fails(tmp_path, [train], r"missing image .*BraTS2021_00003_t1ce\.nii\.gz")


def test_shape_and_geometry_mismatch(tmp_path):
    train = make_brats(str(tmp_path / "t"), TRAIN_2021, "2021")
    seg = os.path.join(train, "BraTS2021_00002", "BraTS2021_00002_seg.nii.gz")
    _write(np.zeros((8, 16, 15), np.uint8), seg)
    _fails(tmp_path, [train], r"BraTS2021_00002_seg\.nii\.gz: size \(15, 16, 8\) instead of \(16, 16, 8\)")
    _write(np.zeros(SHAPE, np.uint8), seg, spacing=(1.0, 1.0, 1.2))
    _fails(tmp_path, [train], r"BraTS2021_00002_seg\.nii\.gz: spacing \(1, 1, 1.2\) instead of \(1, 1, 1\)")
    _write(np.zeros(SHAPE, np.int16), os.path.join(train, "BraTS2021_00002", "BraTS2021_00002_flair.nii.gz"),
           origin=(0.0, -238.0, 0.0))
    _fails(tmp_path, [train], r"BraTS2021_00002_flair\.nii\.gz: origin .* instead of .* \(expected the grid of "
                              r".*BraTS2021_00002_t1\.nii\.gz\)")


def test_unexpected_labels(tmp_path):
    train = make_brats(str(tmp_path / "t"), TRAIN_2021, "2021")
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, 0] = 3
    _write(seg, os.path.join(train, "BraTS2021_00005", "BraTS2021_00005_seg.nii.gz"))
    # raised in a worker process, it reaches the caller intact
    _fails(tmp_path, [train], r"BraTS2021_00005_seg\.nii\.gz: unexpected label value\(s\) \[3\]; expected only "
                              r"\[0, 1, 2, 4\] \(BraTS 2021 naming", num_processes=2)


def test_duplicate_ids(tmp_path):
    a = make_brats(str(tmp_path / "a"), TRAIN_2021, "2021")
    b = make_brats(str(tmp_path / "b"), ["BraTS2021_00002"], "2021", labelled=False)
    _fails(tmp_path, [a, b], r"duplicate case id BraTS2021_00002")


def test_empty_and_wrong_folders(tmp_path):
    os.makedirs(tmp_path / "empty" / "patient1")
    _fails(tmp_path, [str(tmp_path / "empty")], r"no BraTS case folders in .*empty \(expected BraTS2021_XXXXX/")
    _fails(tmp_path, [str(tmp_path / "missing")], r"BraTS folder .*missing does not exist")


def test_existing_dataset_needs_overwrite(tmp_path):
    train = make_brats(str(tmp_path / "t"), TRAIN_2021, "2021")
    brats2022.convert([train], options(tmp_path), n_folds=2)
    with pytest.raises(ConversionError, match="Dataset501_BraTS2022 already exists; pass --overwrite"):
        brats2022.convert([train], options(tmp_path), n_folds=2)
    brats2022.convert([train], options(tmp_path, overwrite=True), n_folds=2)


def test_exporter_bad_input(tmp_path):
    train = make_brats(str(tmp_path / "t"), TRAIN_2021, "2021")
    ds = brats2022.convert([train], options(tmp_path), n_folds=2)
    pred = str(tmp_path / "pred")
    shutil.copytree(os.path.join(ds, "labelsTr"), pred)
    os.remove(os.path.join(pred, "BraTS2021_00003.nii.gz"))
    with pytest.raises(ConversionError, match=r"1 case\(s\) of .* have no prediction .*BraTS2021_00003"):
        brats2022.export(pred, str(tmp_path / "sub"), raw=[train])
    _write(np.full(SHAPE, 4, np.uint8), os.path.join(pred, "BraTS2021_00000.nii.gz"))
    with pytest.raises(ConversionError, match=r"BraTS2021_00000\.nii\.gz: unexpected label value\(s\) \[4\]"):
        brats2022.export(pred, str(tmp_path / "sub"))
    assert os.listdir(tmp_path / "sub") == [], "nothing may be half-written"
    os.remove(os.path.join(pred, "BraTS2021_00000.nii.gz"))
    shutil.copy(os.path.join(pred, "BraTS2021_00002.nii.gz"), os.path.join(pred, "case7.nii.gz"))
    with pytest.raises(ConversionError, match=r"case7\.nii\.gz: cannot tell the BraTS naming of 'case7'"):
        brats2022.export(pred, str(tmp_path / "sub"))
    with pytest.raises(ConversionError, match=r"case7\.nii\.gz: case7 is not a case of"):
        brats2022.export(pred, str(tmp_path / "sub"), raw=[train])
