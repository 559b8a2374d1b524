"""PH2 and BUSI converters on generated images in both layouts: the public releases' naming and images/ + masks/."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nnunetv2_xdim.dataset_conversion import busi, ph2
from nnunetv2_xdim.dataset_conversion._common import ConversionError, DatasetOptions

from e2e_util import nnunet_verify  # noqa: E402

H, W = 12, 16
PH2_CASES = ("IMD002", "IMD003", "IMD010", "IMD101", "IMD437")


def options(tmp_path, dataset_id, name, overwrite=False):
    return DatasetOptions(raw_root=str(tmp_path / "raw"), preprocessed_root=str(tmp_path / "pre"),
                          dataset_id=dataset_id, name=name, overwrite=overwrite, num_processes=1)


def rgb_of(i, size=(H, W)):
    """Distinct R, G, B planes: R in 0..49, G in 100..149, B in 200..249."""
    rng = np.random.default_rng(i)
    return np.stack([rng.integers(base, base + 50, size, dtype=np.uint8) for base in (0, 100, 200)], -1)


def mask_of(i, size=(H, W)):
    m = np.zeros(size, np.uint8)
    m[2 + i % 3:8, 3:10 + i % 4] = 255
    return m


def read_io(path):
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    return NaturalImage2DIO().read_images([path])[0]


def outputs(ds, case):
    return read_io(os.path.join(ds, "imagesTr", f"{case}_0000.png")), read_io(os.path.join(ds, "labelsTr",
                                                                                            f"{case}.png"))


# ------------------------------------------------------------------------------------------------- PH2


def make_ph2_release(root, cases=PH2_CASES, under="PH2Dataset"):
    base = os.path.join(root, under, "PH2 Dataset images")
    for i, case in enumerate(cases):
        for sub in ("Dermoscopic_Image", "lesion", "roi"):
            os.makedirs(os.path.join(base, case, f"{case}_{sub}"))
        Image.fromarray(rgb_of(i)).save(os.path.join(base, case, f"{case}_Dermoscopic_Image", f"{case}.bmp"))
        mask = Image.fromarray(mask_of(i))
        (mask.convert("1") if i % 2 else mask).save(os.path.join(base, case, f"{case}_lesion", f"{case}_lesion.bmp"))
    with open(os.path.join(root, under, "PH2_dataset.txt"), "w") as f:
        f.write("|| Name || Histological Diagnosis ||\n")
    return root


def make_ph2_dev(root, cases=PH2_CASES):
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(root, sub))
    for i, case in enumerate(cases):
        Image.fromarray(rgb_of(i)).save(os.path.join(root, "images", f"{case}.png"))
        Image.fromarray(mask_of(i)).save(os.path.join(root, "masks", f"{case}.png"))
    return root


@pytest.mark.parametrize("layout", ["release", "images_masks"])
def test_ph2_converts_both_layouts(tmp_path, layout, monkeypatch):
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import RGBTo01Normalization
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

    src = make_ph2_release(str(tmp_path / "in")) if layout == "release" else make_ph2_dev(str(tmp_path / "in"))
    ds = ph2.convert(src, options(tmp_path, 506, "PH2"))
    assert ds == str(tmp_path / "raw" / "Dataset506_PH2")
    assert sorted(os.listdir(ds)) == ["case_info.json", "dataset.json", "imagesTr", "labelsTr", "splits_final.json"]
    assert sorted(os.listdir(os.path.join(ds, "imagesTr"))) == [f"{c}_0000.png" for c in PH2_CASES]
    assert sorted(os.listdir(os.path.join(ds, "labelsTr"))) == [f"{c}.png" for c in PH2_CASES]
    dj = json.load(open(os.path.join(ds, "dataset.json")))
    assert dj["channel_names"] == {"0": "rgb_to_0_1", "1": "rgb_to_0_1", "2": "rgb_to_0_1"}
    assert [get_normalization_scheme(dj["channel_names"][str(c)]) for c in range(3)] == [RGBTo01Normalization] * 3
    assert dj["channel_meaning"] == {"0": "R", "1": "G", "2": "B"}
    assert dj["labels"] == {"background": 0, "lesion": 1} and dj["numTraining"] == 5 and dj["file_ending"] == ".png"
    for i, case in enumerate(PH2_CASES):
        img, seg = outputs(ds, case)  # nnU-Net's reader: (c, 1, H, W)
        assert img.shape == (3, 1, H, W)
        assert np.array_equal(img[:, 0], rgb_of(i).transpose(2, 0, 1)), "R, G, B must stay in that order"
        assert np.array_equal(seg[0, 0], mask_of(i) // 255)
    splits = json.load(open(os.path.join(ds, "splits_final.json")))
    assert splits == json.load(open(tmp_path / "pre" / "Dataset506_PH2" / "splits_final.json"))
    assert len(splits) == 5 and sorted(c for f in splits for c in f["val"]) == list(PH2_CASES)
    assert all(len(f["val"]) == 1 and len(f["train"]) == 4 for f in splits)
    info = json.load(open(os.path.join(ds, "case_info.json")))
    assert info["dataset"] == "PH2" and info["input_layout"] == layout and info["normalization"] == "rgb_to_0_1"
    rec = info["cases"]["IMD010"]
    assert rec["group"] == "IMD010" and rec["size"] == [W, H] and rec["lesion_pixels"] == int((mask_of(2) > 0).sum())
    assert rec["image"] == (os.path.join("IMD010", "IMD010_Dermoscopic_Image", "IMD010.bmp") if layout == "release"
                            else os.path.join("images", "IMD010.png"))
    if layout == "release":
        nnunet_verify(ds, monkeypatch)


@pytest.mark.parametrize("under", ["PH2Dataset/PH2 Dataset images", "PH2Dataset"])
def test_ph2_release_roots(tmp_path, under):
    src = make_ph2_release(str(tmp_path / "in"), PH2_CASES[:2])
    ds = ph2.convert(os.path.join(src, under), options(tmp_path, 506, "PH2"), n_folds=2)
    assert json.load(open(os.path.join(ds, "dataset.json")))["numTraining"] == 2


def _fails(tmp_path, convert, src, match, **kw):
    with pytest.raises(ConversionError, match=match):
        convert(src, **kw)
    raw = tmp_path / "raw"
    assert not raw.exists() or not os.listdir(raw), "nothing may be left behind"


def test_ph2_refusals(tmp_path):
    conv = lambda src, **kw: ph2.convert(src, options(tmp_path, 506, "PH2"), **kw)  # noqa: E731
    os.makedirs(tmp_path / "empty")
    _fails(tmp_path, conv, str(tmp_path / "empty"), r"holds no PH2 data")
    _fails(tmp_path, conv, str(tmp_path / "nowhere"), r"does not exist")
    os.makedirs(tmp_path / "e2" / "PH2 Dataset images")
    _fails(tmp_path, conv, str(tmp_path / "e2"), r"no IMDxxx case folders in .*PH2 Dataset images")
    os.makedirs(tmp_path / "e3" / "images")
    _fails(tmp_path, conv, str(tmp_path / "e3"), r"mask folder .*masks does not exist")
    os.makedirs(tmp_path / "e3" / "masks")
    _fails(tmp_path, conv, str(tmp_path / "e3"), r"no \.png images in .*images")

    rel = make_ph2_release(str(tmp_path / "rel"))
    lesion = os.path.join(rel, "PH2Dataset", "PH2 Dataset images", "IMD010", "IMD010_lesion", "IMD010_lesion.bmp")
    os.rename(lesion, lesion + ".bak")
    _fails(tmp_path, conv, rel, r"missing mask .*IMD010_lesion.IMD010_lesion\.bmp")
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(lesion)
    _fails(tmp_path, conv, rel, r"IMD010_lesion\.bmp: size 16x13 \(W x H\) differs from its image .*IMD010\.bmp "
                                r"\(16x12\)")

    dev = make_ph2_dev(str(tmp_path / "dev"))
    os.remove(os.path.join(dev, "masks", "IMD003.png"))
    _fails(tmp_path, conv, dev, r"missing mask .*masks.IMD003\.png")
    Image.fromarray(mask_of(0)).save(os.path.join(dev, "masks", "IMD003.png"))
    Image.fromarray(mask_of(0)).save(os.path.join(dev, "masks", "IMD999.png"))
    _fails(tmp_path, conv, dev, r"1 mask\(s\) in .*masks have no image .*IMD999\.png")
    os.remove(os.path.join(dev, "masks", "IMD999.png"))
    Image.fromarray(rgb_of(0)).save(os.path.join(dev, "images", "photo.png"))
    _fails(tmp_path, conv, dev, r"photo\.png: not a PH2 image name")
    os.remove(os.path.join(dev, "images", "photo.png"))
    Image.fromarray(np.zeros((H, W), np.uint16)).save(os.path.join(dev, "images", "IMD002.png"))
    _fails(tmp_path, conv, dev, r"IMD002\.png: pixel mode 'I;16' is not an 8-bit image")


def test_ph2_existing_dataset_needs_overwrite(tmp_path, monkeypatch, capsys):
    src = make_ph2_dev(str(tmp_path / "dev"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    ph2.main(["-i", src, "--folds", "2", "-np", "2"])  # worker processes
    ds = tmp_path / "raw" / "Dataset506_PH2"
    (ds / "marker").write_text("")
    before = sorted(os.listdir(ds / "imagesTr"))
    with pytest.raises(SystemExit) as e:
        ph2.main(["-i", src, "--folds", "2", "-np", "1"])
    assert e.value.code == 1 and "already exists; pass --overwrite" in capsys.readouterr().err
    assert (ds / "marker").exists() and sorted(os.listdir(ds / "imagesTr")) == before
    # an --overwrite that fails half way (a bad pair found while writing) leaves the old dataset as it was
    Image.fromarray(np.zeros((H, W - 1), np.uint8)).save(os.path.join(src, "masks", "IMD437.png"))
    with pytest.raises(SystemExit):
        ph2.main(["-i", src, "--folds", "2", "--overwrite", "-np", "1"])
    assert "IMD437.png: size 15x12" in capsys.readouterr().err
    assert (ds / "marker").exists() and os.listdir(tmp_path / "raw") == ["Dataset506_PH2"]
    Image.fromarray(mask_of(0)).save(os.path.join(src, "masks", "IMD437.png"))
    ph2.main(["-i", src, "--folds", "2", "--overwrite", "-d", "506", "--name", "PH2", "-np", "1"])
    assert not (ds / "marker").exists() and os.listdir(tmp_path / "raw") == ["Dataset506_PH2"]


def test_ph2_nnunet_planning_selects_rgb_to_0_1(tmp_path):
    """nnUNetv2_plan_and_preprocess on a converted PH2: RGBTo01Normalization for R, G, B, data kept in that order."""
    ph2.convert(make_ph2_dev(str(tmp_path / "dev")), options(tmp_path, 506, "PH2"))
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_n_proc_DA"}  # 0 crashes 2.8.1's planner
    env.update(nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "results"))
    script = ("import multiprocessing, sys\n"  # fork, not spawn: each spawned worker would import torch again
              "get_context = multiprocessing.get_context\n"
              "multiprocessing.get_context = lambda *_: get_context('fork')\n"
              "from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import plan_and_preprocess_entry\n"
              "sys.argv = ['nnUNetv2_plan_and_preprocess', '-d', '506', '-c', '2d', '-np', '1']\n"
              "plan_and_preprocess_entry()\n")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    pre = tmp_path / "pre" / "Dataset506_PH2"
    plans = json.load(open(pre / "nnUNetPlans.json"))
    assert plans["configurations"]["2d"]["normalization_schemes"] == ["RGBTo01Normalization"] * 3
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    folder = str(pre / "nnUNetPlans_2d")
    data = infer_dataset_class(folder)(folder).load_case("IMD010")[0]
    assert np.allclose(np.asarray(data)[:, 0], rgb_of(2).transpose(2, 0, 1) / 255.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ BUSI

# (class, n): image content and how it is stored; benign (2) has a second lesion in _mask_1
BUSI = {("benign", 1): "gray", ("benign", 2): "rgb_equal", ("benign", 14): "rgb_differ", ("malignant", 3): "rgba",
        ("malignant", 7): "gray", ("normal", 5): "gray", ("normal", 9): "rgb_equal"}
BUSI_CASES = sorted(f"busi_{c}_{n:03d}" for c, n in BUSI)


def busi_gray(i):
    return np.random.default_rng(100 + i).integers(0, 256, (H, W), dtype=np.uint8)


def busi_store(i, how):
    g = busi_gray(i)
    if how == "gray":
        return Image.fromarray(g)
    if how == "rgb_equal":
        return Image.fromarray(np.stack([g] * 3, -1))
    if how == "rgba":
        return Image.fromarray(np.stack([g] * 3 + [np.full_like(g, 255)], -1))
    return Image.fromarray(rgb_of(i))  # channels differ: luma


def busi_mask(cls, i):
    return np.zeros((H, W), np.uint8) if cls == "normal" else mask_of(i)


EXTRA_LESION = (slice(9, 11), slice(12, 15))


def make_busi_release(root, under="Dataset_BUSI_with_GT"):
    for i, ((cls, n), how) in enumerate(sorted(BUSI.items())):
        folder = os.path.join(root, under, cls)
        os.makedirs(folder, exist_ok=True)
        busi_store(i, how).save(os.path.join(folder, f"{cls} ({n}).png"))
        mask = Image.fromarray(busi_mask(cls, i))
        (mask.convert("RGB") if how != "gray" else mask).save(os.path.join(folder, f"{cls} ({n})_mask.png"))
        if (cls, n) == ("benign", 2):
            extra = np.zeros((H, W), np.uint8)
            extra[EXTRA_LESION] = 255
            Image.fromarray(extra).save(os.path.join(folder, f"{cls} ({n})_mask_1.png"))
    return root


def make_busi_dev(root):
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(root, sub))
    for i, ((cls, n), how) in enumerate(sorted(BUSI.items())):
        img = busi_store(i, how)
        img = img.convert("L") if how != "rgb_differ" else img
        img.save(os.path.join(root, "images", f"busi_{cls}_{n:03d}.png"))
        mask = busi_mask(cls, i)
        if (cls, n) == ("benign", 2):
            mask[EXTRA_LESION] = 255
        Image.fromarray(mask).save(os.path.join(root, "masks", f"busi_{cls}_{n:03d}.png"))
    return root


@pytest.mark.parametrize("layout", ["release", "images_masks"])
def test_busi_converts_both_layouts(tmp_path, layout, capsys, monkeypatch):
    src = make_busi_release(str(tmp_path / "in")) if layout == "release" else make_busi_dev(str(tmp_path / "in"))
    ds = busi.convert(src, options(tmp_path, 507, "BUSI"), n_folds=3)
    assert sorted(os.listdir(os.path.join(ds, "imagesTr"))) == [f"{c}_0000.png" for c in BUSI_CASES]
    assert sorted(os.listdir(os.path.join(ds, "labelsTr"))) == [f"{c}.png" for c in BUSI_CASES]
    dj = json.load(open(os.path.join(ds, "dataset.json")))
    assert dj["channel_names"] == {"0": "rgb_to_0_1"} and dj["labels"] == {"background": 0, "lesion": 1}
    assert dj["numTraining"] == 7 and dj["file_ending"] == ".png"
    info = json.load(open(os.path.join(ds, "case_info.json")))
    for i, ((cls, n), how) in enumerate(sorted(BUSI.items())):
        case = f"busi_{cls}_{n:03d}"
        img, seg = outputs(ds, case)
        assert img.shape == (1, 1, H, W)
        expected = np.asarray(Image.fromarray(rgb_of(i)).convert("L")) if how == "rgb_differ" else busi_gray(i)
        assert np.array_equal(img[0, 0], expected), how
        mask = busi_mask(cls, i) // 255
        if (cls, n) == ("benign", 2):
            mask[EXTRA_LESION] = 1  # _mask_1 merged
        assert np.array_equal(seg[0, 0], mask)
        rec = info["cases"][case]
        assert rec["class"] == cls and rec["group"] == case and rec["lesion_pixels"] == int(mask.sum())
    assert info["cases"]["busi_benign_002"]["masks"][-1].endswith(
        "benign (2)_mask_1.png" if layout == "release" else "busi_benign_002.png")
    out = capsys.readouterr().out
    if layout == "release":
        assert info["cases"]["busi_benign_014"]["image_conversion"] == "luma"
        assert info["cases"]["busi_benign_002"]["image_conversion"] == "rgb_equal_channels"
        assert "3 image(s) stored as RGB with equal channels" in out
        assert "1 image(s) stored as RGB with differing" in out
    splits = json.load(open(os.path.join(ds, "splits_final.json")))
    assert len(splits) == 3 and sorted(c for f in splits for c in f["val"]) == BUSI_CASES
    nnunet_verify(ds, monkeypatch)


def test_busi_groups_and_options(tmp_path):
    src = make_busi_release(str(tmp_path / "in"))
    groups = tmp_path / "groups.csv"
    groups.write_text("image,group\nbenign (1).png,p1\nbenign (2),p1\nbusi_benign_014,p1\nbusi_malignant_003.png,p2\n"
                      "malignant (7).png,p2\nnormal (5).png,p3\n\nnormal (9).png,p4\n")
    ds = busi.convert(src, options(tmp_path, 507, "BUSI"), n_folds=3, groups_file=str(groups))
    info = json.load(open(os.path.join(ds, "case_info.json")))["cases"]
    assert [info[c]["group"] for c in BUSI_CASES] == ["p1", "p1", "p1", "p2", "p2", "p3", "p4"]
    for fold in json.load(open(os.path.join(ds, "splits_final.json"))):
        assert not {info[c]["group"] for c in fold["train"]} & {info[c]["group"] for c in fold["val"]}

    as_json = tmp_path / "groups.json"
    as_json.write_text(json.dumps({c: i % 2 for i, c in enumerate(BUSI_CASES)}))
    ds = busi.convert(src, options(tmp_path, 507, "BUSI", overwrite=True), n_folds=2, groups_file=str(as_json),
                      normalization="zscore")
    assert json.load(open(os.path.join(ds, "dataset.json")))["channel_names"] == {"0": "zscore"}
    splits = json.load(open(os.path.join(ds, "splits_final.json")))
    assert sorted(len(f["val"]) for f in splits) == [3, 4]

    def bad(text, match, name="g.csv", **kw):
        (tmp_path / name).write_text(text)
        with pytest.raises(ConversionError, match=match):
            busi.convert(src, options(tmp_path, 508, "X"), groups_file=str(tmp_path / name), **kw)
        assert not (tmp_path / "raw" / "Dataset508_X").exists()

    rows = "".join(f"{c},g{i}\n" for i, c in enumerate(BUSI_CASES))
    bad(rows + "benign (99).png,g1\n", r"g\.csv names 1 image\(s\) that are not in the input, e.g. \['benign \(99\)")
    bad(rows.split("\n", 1)[1], r"gives no group for 1 of 7 image\(s\), e.g. \['busi_benign_001'\]")
    bad(rows + "benign (1).png,other\n", r"gives case busi_benign_001 two groups")
    bad(rows + "busi_normal_009;x\n", r"g\.csv, line 8: expected two columns")
    bad("{not json", r"not valid JSON", name="g.json")
    bad(rows, r"cannot make 8 patient-grouped folds from 7", n_folds=8)
    with pytest.raises(ConversionError, match=r"groups file .*nope\.csv not found"):
        busi.convert(src, options(tmp_path, 508, "X"), groups_file=str(tmp_path / "nope.csv"))


def test_busi_refusals(tmp_path, capsys):
    conv = lambda src, **kw: busi.convert(src, options(tmp_path, 507, "BUSI"), n_folds=2, **kw)  # noqa: E731
    os.makedirs(tmp_path / "empty")
    _fails(tmp_path, conv, str(tmp_path / "empty"), r"holds no BUSI data")
    os.makedirs(tmp_path / "e2" / "Dataset_BUSI_with_GT" / "benign")
    _fails(tmp_path, conv, str(tmp_path / "e2"), r"no images in .*benign \(expected 'benign \(n\).png'")

    rel = make_busi_release(str(tmp_path / "rel"))
    folder = os.path.join(rel, "Dataset_BUSI_with_GT", "malignant")
    os.rename(os.path.join(folder, "malignant (7)_mask.png"), os.path.join(tmp_path, "kept.png"))
    _fails(tmp_path, conv, rel, r"missing mask .*malignant \(7\)_mask\.png for image .*malignant \(7\)\.png")
    os.rename(os.path.join(tmp_path, "kept.png"), os.path.join(folder, "malignant (7)_mask.png"))
    Image.fromarray(mask_of(0)).save(os.path.join(folder, "malignant (8)_mask.png"))
    _fails(tmp_path, conv, rel, r"mask .*malignant \(8\)_mask\.png has no image")
    os.remove(os.path.join(folder, "malignant (8)_mask.png"))
    benign = os.path.join(rel, "Dataset_BUSI_with_GT", "benign")
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(os.path.join(benign, "benign (2)_mask_1.png"))
    _fails(tmp_path, conv, rel, r"benign \(2\)_mask_1\.png: size 18x12 \(W x H\) differs from its image "
                                r".*benign \(2\)\.png \(16x12\)")
    os.remove(os.path.join(benign, "benign (2)_mask_1.png"))
    Image.fromarray(mask_of(0)).save(os.path.join(benign, "benign (2) copy.png"))
    ds = conv(rel)  # unknown files are named and skipped
    assert "ignored 1 file(s) that are not named like BUSI images or masks" in capsys.readouterr().err
    assert json.load(open(os.path.join(ds, "dataset.json")))["numTraining"] == 7
    with pytest.raises(ConversionError, match="already exists; pass --overwrite"):  # the release folder itself
        conv(os.path.join(rel, "Dataset_BUSI_with_GT"))

    dev = make_busi_dev(str(tmp_path / "dev"))
    tmp_path = tmp_path / "other"
    Image.fromarray(busi_gray(0)).save(os.path.join(dev, "images", "busi_cyst_001.png"))
    _fails(tmp_path, conv, dev, r"busi_cyst_001\.png: not a BUSI image name")
    os.remove(os.path.join(dev, "images", "busi_cyst_001.png"))
    os.remove(os.path.join(dev, "masks", "busi_normal_005.png"))
    _fails(tmp_path, conv, dev, r"missing mask .*masks.busi_normal_005\.png")
    Image.fromarray(np.zeros((H - 1, W), np.uint8)).save(os.path.join(dev, "masks", "busi_normal_005.png"))
    _fails(tmp_path, conv, dev, r"busi_normal_005\.png: size 16x11 \(W x H\) differs from its image")


@pytest.mark.parametrize("command", ["nnunetv2_xdim_convert_ph2", "nnunetv2_xdim_convert_busi"])
def test_console_command(command):
    run = subprocess.run([command, "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and f"usage: {command}" in run.stdout and "--dataset-id" in run.stdout
