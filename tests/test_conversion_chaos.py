"""CHAOS converter and exporter on generated DICOM series (file-name order = descending z) and PNG masks."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom")

from nnunetv2_xdim.dataset_conversion import chaos  # noqa: E402
from nnunetv2_xdim.dataset_conversion._common import ConversionError, DatasetOptions  # noqa: E402

from challenge_fixtures import COLS, ROWS, SLICES, make_chaos, write_series  # noqa: E402
from e2e_util import nnunet_verify  # noqa: E402


def options(tmp_path, dataset_id, name, overwrite=False):
    return DatasetOptions(raw_root=str(tmp_path / "raw"), preprocessed_root=str(tmp_path / "pre"),
                          dataset_id=dataset_id, name=name, overwrite=overwrite, num_processes=1)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_chaos(str(tmp_path_factory.mktemp("chaos")))


@pytest.fixture
def src(tmp_path, release):
    """A private copy to break."""
    return shutil.copytree(release, str(tmp_path / "chaos"))


def _train(root, *parts):
    return os.path.join(root, "CHAOS_Train_Sets", "Train_Sets", *parts)


def _as_predictions(dataset, pred_dir, sub="labelsTr"):
    os.makedirs(pred_dir, exist_ok=True)
    for n in os.listdir(os.path.join(dataset, sub)):
        shutil.copy(os.path.join(dataset, sub, n), pred_dir)
    return pred_dir


def _pngs(folder):
    return [sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, n))) for n in sorted(os.listdir(folder))]


def test_ct_slice_pairing_and_geometry(tmp_path, release):
    """Masks pair with DICOM files by name; geometry from the positions; nothing flipped or shifted."""
    ds = chaos.convert(release, options(tmp_path, 502, "CHAOS_CT"), "CT", n_folds=3)
    img = sitk.ReadImage(os.path.join(ds, "imagesTr", "CT_005_0000.nii.gz"))
    seg = sitk.ReadImage(os.path.join(ds, "labelsTr", "CT_005.nii.gz"))
    vol, lab = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(seg)
    assert vol.dtype == np.int16 and vol.shape == (SLICES, ROWS, COLS)
    record = json.load(open(os.path.join(ds, chaos.SIDECAR)))["CT_005"]
    dicom_dir, ground_dir = _train(release, "CT", "5", "DICOM_anon"), _train(release, "CT", "5", "Ground")
    assert record["dicom_files"] == sorted(os.listdir(dicom_dir))
    assert record["z_index"] == list(range(SLICES))[::-1]  # file-name order is descending z
    for i, name in enumerate(sorted(os.listdir(dicom_dir))):
        d = pydicom.dcmread(os.path.join(dicom_dir, name))
        k = record["z_index"][i]
        assert np.array_equal(vol[k], d.pixel_array.astype(np.int32) - 1024)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(ground_dir, f"liver_GT_{i:03d}.png")))
        assert np.array_equal(lab[k], mask > 0)
        assert np.allclose(img.TransformIndexToPhysicalPoint((0, 0, k)), [float(v) for v in d.ImagePositionPatient])
        # column index runs along the row direction at PixelSpacing[1]
        assert np.allclose(np.subtract(img.TransformIndexToPhysicalPoint((3, 0, k)),
                                       img.TransformIndexToPhysicalPoint((0, 0, k))), (3 * 0.74, 0, 0))
    # the same volume and grid as GDCM's position-sorted series reader
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([os.path.join(dicom_dir, n) for n in sorted(os.listdir(dicom_dir), reverse=True)])
    ref = reader.Execute()
    assert np.array_equal(sitk.GetArrayFromImage(ref), vol)
    for a, b in ((ref.GetSpacing(), img.GetSpacing()), (ref.GetOrigin(), img.GetOrigin()),
                 (ref.GetDirection(), img.GetDirection())):
        assert np.allclose(a, b, atol=1e-4)
    assert os.listdir(os.path.join(ds, "imagesTs")) == ["CT_003_0000.nii.gz"]
    splits = json.load(open(os.path.join(ds, "splits_final.json")))
    assert sorted(c for f in splits for c in f["val"]) == ["CT_001", "CT_005", "CT_008"]


def test_oblique_mr_geometry_matches_gdcm(tmp_path, release):
    ds = chaos.convert(release, options(tmp_path, 503, "CHAOS_MR"), "MR", n_folds=3)
    img = sitk.ReadImage(os.path.join(ds, "imagesTr", "MR_010_T2_0000.nii.gz"))
    folder = _train(release, "MR", "10", "T2SPIR", "DICOM_anon")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([os.path.join(folder, n) for n in sorted(os.listdir(folder), reverse=True)])
    ref = reader.Execute()
    assert np.array_equal(sitk.GetArrayFromImage(ref), sitk.GetArrayFromImage(img))
    assert np.allclose(ref.GetDirection(), img.GetDirection(), atol=1e-4)
    assert np.allclose(ref.GetOrigin(), img.GetOrigin(), atol=1e-3)
    assert np.allclose(ref.GetSpacing(), img.GetSpacing(), atol=1e-4)
    assert np.isclose(img.GetSpacing()[2], 7.7, atol=1e-4)


def test_ct_round_trip(tmp_path, release):
    ds = chaos.convert(release, options(tmp_path, 502, "CHAOS_CT"), "CT", n_folds=3)
    chaos.export(_as_predictions(ds, str(tmp_path / "pred")), str(tmp_path / "sub"), dataset=ds)
    for p in ("1", "5", "8"):
        ground = _pngs(_train(release, "CT", p, "Ground"))
        for task in (1, 2, 4):
            results = tmp_path / "sub" / f"Task{task}" / "CT" / p / "Results"
            assert sorted(os.listdir(results))[0] == "img000.png"
            got = _pngs(results)
            assert len(got) == len(ground) and all(np.array_equal(a, b) for a, b in zip(got, ground))
            assert all(g.dtype == np.uint8 for g in got)


def test_mr_single_channel_round_trip_and_raw_order(tmp_path, release):
    ds = chaos.convert(release, options(tmp_path, 503, "CHAOS_MR"), "MR", n_folds=3)
    dj = json.load(open(os.path.join(ds, "dataset.json")))
    assert dj["numTraining"] == 9 and dj["labels"]["spleen"] == 4
    splits = json.load(open(os.path.join(ds, "splits_final.json")))
    for fold in splits:  # a patient's three sequences stay on one side
        assert not {c[:6] for c in fold["train"]} & {c[:6] for c in fold["val"]}
        assert len(fold["val"]) == 3
    pred = _as_predictions(ds, str(tmp_path / "pred"))
    chaos.export(pred, str(tmp_path / "sub"), dataset=ds)
    chaos.export(pred, str(tmp_path / "sub_raw"), raw=release)
    for p in ("2", "10", "13"):
        for seq in ("T1DUAL", "T2SPIR"):
            ground = _pngs(_train(release, "MR", p, seq, "Ground"))
            for sub in ("sub", "sub_raw"):
                got = _pngs(tmp_path / sub / "Task5" / "MR" / p / seq / "Results")
                assert len(got) == len(ground) and all(np.array_equal(a, b) for a, b in zip(got, ground))
            liver = _pngs(tmp_path / "sub" / "Task3" / "MR" / p / seq / "Results")
            assert all(np.array_equal(a, np.where(b == 63, 63, 0)) for a, b in zip(liver, ground))


def test_mr_t1_two_channels(tmp_path, release):
    ds = chaos.convert(release, options(tmp_path, 505, "CHAOS_MR_T1dual"), "MR", t1_channels=True, n_folds=3)
    dj = json.load(open(os.path.join(ds, "dataset.json")))
    assert dj["channel_names"] == {"0": "T1_in_phase", "1": "T1_out_phase"} and dj["numTraining"] == 3
    out_phase = sitk.ReadImage(os.path.join(ds, "imagesTr", "MR_002_T1_0001.nii.gz"))
    folder = _train(release, "MR", "2", "T1DUAL", "DICOM_anon", "OutPhase")
    first = pydicom.dcmread(os.path.join(folder, sorted(os.listdir(folder))[0]))
    assert np.array_equal(sitk.GetArrayFromImage(out_phase)[-1], first.pixel_array)  # first file = top slice
    chaos.export(_as_predictions(ds, str(tmp_path / "pred")), str(tmp_path / "sub"), dataset=ds, tasks=[5])
    assert os.listdir(tmp_path / "sub") == ["Task5"]
    got = _pngs(tmp_path / "sub" / "Task5" / "MR" / "2" / "T1DUAL" / "Results")
    ground = _pngs(_train(release, "MR", "2", "T1DUAL", "Ground"))
    assert all(np.array_equal(a, b) for a, b in zip(got, ground))


def test_grey_ranges():
    grey = np.array([[0, 55, 63, 70], [110, 135, 175, 200], [240, 252, 255, 0]], np.uint8)
    assert chaos.grey_to_labels(grey, "MR", "x.png").tolist() == [[0, 1, 1, 1], [2, 2, 3, 3], [4, 4, 4, 0]]
    with pytest.raises(ConversionError, match=r"x\.png: grey value\(s\) \[100\] match no organ"):
        chaos.grey_to_labels(np.array([[0, 100]], np.uint8), "MR", "x.png")


def test_cli(tmp_path, release, capsys):
    chaos.main(["-i", release, "-m", "CT", "-o", str(tmp_path / "raw"), "--preprocessed-dir", str(tmp_path / "pre"),
                "--folds", "3"])
    assert (tmp_path / "pre" / "Dataset502_CHAOS_CT" / "splits_final.json").is_file()
    with pytest.raises(SystemExit):
        chaos.export_main(["-i", str(tmp_path / "raw" / "Dataset502_CHAOS_CT" / "labelsTr"), "-o", str(tmp_path / "s"),
                           "--tasks", "3", "-d", str(tmp_path / "raw" / "Dataset502_CHAOS_CT")])
    assert "none of tasks [3] takes CT results" in capsys.readouterr().err


def test_nnunet_accepts_dataset(tmp_path, release, monkeypatch):
    ds = chaos.convert(release, options(tmp_path, 505, "CHAOS_MR_T1dual"), "MR", t1_channels=True, n_folds=3)
    nnunet_verify(ds, monkeypatch)


@pytest.mark.parametrize("command", ["nnunetv2_xdim_convert_chaos", "nnunetv2_xdim_export_chaos"])
def test_console_command(command):
    run = subprocess.run([command, "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and f"usage: {command}" in run.stdout


# ------------------------------------------------------------------------------------------- bad input


def _fails(tmp_path, src, match, modality="MR", **kw):
    with pytest.raises(ConversionError, match=match):
        chaos.convert(src, options(tmp_path, 503, "X"), modality, n_folds=3, **kw)
    assert not (tmp_path / "raw").exists() or not os.listdir(tmp_path / "raw"), "nothing may be left behind"


def test_missing_sequence(tmp_path, src):
    shutil.rmtree(_train(src, "MR", "10", "T1DUAL", "DICOM_anon", "OutPhase"))
    _fails(tmp_path, src, r"missing DICOM folder .*MR/10/T1DUAL/DICOM_anon/OutPhase")


def test_missing_masks(tmp_path, src):
    shutil.rmtree(_train(src, "MR", "13", "T2SPIR", "Ground"))
    _fails(tmp_path, src, r"missing mask folder .*MR/13/T2SPIR/Ground")


def test_mask_count_mismatch(tmp_path, src):
    os.remove(_train(src, "MR", "13", "T2SPIR", "Ground", "IMG-0002-00003.png"))
    _fails(tmp_path, src, r"T2SPIR/Ground: 4 PNG masks for 5 DICOM files in .*T2SPIR/DICOM_anon")


def test_mask_shape_mismatch(tmp_path, src):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((ROWS, COLS + 1), np.uint8)),
                    _train(src, "CT", "8", "Ground", "liver_GT_002.png"))
    _fails(tmp_path, src, r"liver_GT_002\.png: \(12, 17\) with 1 channel\(s\), expected a grey 12 x 16 mask", "CT")


def test_unexpected_grey_value(tmp_path, src):
    sitk.WriteImage(sitk.GetImageFromArray(np.full((ROWS, COLS), 90, np.uint8)),
                    _train(src, "MR", "2", "T2SPIR", "Ground", "IMG-0002-00004.png"))
    _fails(tmp_path, src, r"IMG-0002-00004\.png: grey value\(s\) \[90\] match no organ")


def test_phase_grid_mismatch(tmp_path, src):
    folder = _train(src, "MR", "2", "T1DUAL", "DICOM_anon", "OutPhase")
    shutil.rmtree(folder)
    write_series(folder, [f"IMG-0004-{2 * i + 1:05d}.dcm" for i in range(SLICES)], 1, "MR", step=3.0)
    _fails(tmp_path, src, r"OutPhase: spacing \(0.74, 0.78, 3\) instead of \(0.74, 0.78, 2.5\)", t1_channels=True)


def test_irregular_slices_and_missing_tags(tmp_path, src):
    folder = _train(src, "CT", "1", "DICOM_anon")
    path = os.path.join(folder, "i0003,0000b.dcm")
    d = pydicom.dcmread(path)
    d.ImagePositionPatient = [d.ImagePositionPatient[0], d.ImagePositionPatient[1], "73.9"]
    d.save_as(path)
    _fails(tmp_path, src, r"CT/1/DICOM_anon: irregular slice spacing", "CT")
    del d.ImagePositionPatient
    d.save_as(path)
    _fails(tmp_path, src, r"i0003,0000b\.dcm: missing or malformed DICOM tag ImagePositionPatient", "CT")


def test_duplicate_ids(tmp_path, src):
    shutil.copytree(_train(src, "CT", "5"), os.path.join(src, "CHAOS_Test_Sets", "Test_Sets", "CT", "005"))
    _fails(tmp_path, src, r"duplicate case id CT_005", "CT")


def test_empty_and_wrong_folders(tmp_path):
    os.makedirs(tmp_path / "empty")
    _fails(tmp_path, str(tmp_path / "empty"), r"holds no CHAOS release")
    os.makedirs(tmp_path / "c" / "Train_Sets" / "CT")
    _fails(tmp_path, str(tmp_path / "c"), r"no MR patients in .*Train_Sets")
    for p in ("1", "2", "3"):
        os.makedirs(tmp_path / "c" / "Train_Sets" / "CT" / p / "DICOM_anon")
        os.makedirs(tmp_path / "c" / "Train_Sets" / "CT" / p / "Ground")
    _fails(tmp_path, str(tmp_path / "c"), r"no \.dcm files in .*CT/1/DICOM_anon", "CT")


def test_changed_folds_need_overwrite(tmp_path, release):
    ds = chaos.convert(release, options(tmp_path, 502, "CHAOS_CT"), "CT", n_folds=3)
    shutil.rmtree(ds)
    with pytest.raises(ConversionError, match=r"Dataset502_CHAOS_CT/splits_final\.json exists with different folds"):
        chaos.convert(release, options(tmp_path, 502, "CHAOS_CT"), "CT", n_folds=2)
    assert os.listdir(tmp_path / "raw") == []
    chaos.convert(release, options(tmp_path, 502, "CHAOS_CT", overwrite=True), "CT", n_folds=2)
    assert len(json.load(open(tmp_path / "pre" / "Dataset502_CHAOS_CT" / "splits_final.json"))) == 2


def test_exporter_bad_input(tmp_path, release):
    ds = chaos.convert(release, options(tmp_path, 503, "CHAOS_MR"), "MR", n_folds=3)
    pred = _as_predictions(ds, str(tmp_path / "pred"))
    os.remove(os.path.join(pred, "MR_002_T1in.nii.gz"))
    with pytest.raises(ConversionError, match=r"MR_002_T1out\.nii\.gz is a T1DUAL OutPhase prediction but the "
                                              r"InPhase one is missing; pass --t1dual-phase OutPhase"):
        chaos.export(pred, str(tmp_path / "sub"), dataset=ds)
    chaos.export(pred, str(tmp_path / "sub"), dataset=ds, t1dual_phase="OutPhase", tasks=[5])
    shutil.copy(os.path.join(pred, "MR_002_T2.nii.gz"), os.path.join(pred, "MR_099_T2.nii.gz"))
    with pytest.raises(ConversionError, match=r"MR_099_T2\.nii\.gz: MR_099_T2 is not a case of"):
        chaos.export(pred, str(tmp_path / "sub2"), dataset=ds)
    os.remove(os.path.join(pred, "MR_099_T2.nii.gz"))
    bad = sitk.ReadImage(os.path.join(pred, "MR_010_T2.nii.gz"))
    sitk.WriteImage(bad[:, :, 1:], os.path.join(pred, "MR_010_T2.nii.gz"))
    with pytest.raises(ConversionError, match=r"MR_010_T2\.nii\.gz: shape \(4, 12, 16\) instead of \(5, 12, 16\)"):
        chaos.export(pred, str(tmp_path / "sub3"), dataset=ds, t1dual_phase="OutPhase")
    assert os.listdir(tmp_path / "sub3") == [], "nothing may be half-written"
    sitk.WriteImage(bad + 5, os.path.join(pred, "MR_010_T2.nii.gz"))
    with pytest.raises(ConversionError, match=r"MR_010_T2\.nii\.gz: unexpected label value"):
        chaos.export(pred, str(tmp_path / "sub3"), dataset=ds, t1dual_phase="OutPhase")
    with pytest.raises(ConversionError, match="slice order comes from"):
        chaos.export(pred, str(tmp_path / "sub4"))
