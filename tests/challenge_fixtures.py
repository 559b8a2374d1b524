"""Generated challenge releases in their official layouts (CAMUS 2019/2023, CHAOS, BraTS 2021/2023 naming).

Shared by the converter tests (small images, to test the conversion) and the protocol's tiny end-to-end chain
(images big enough for nnU-Net to plan a real network). Pixel values and labels are random: these trees test
layouts, names and geometry, not segmentation.
"""
import os
import zlib

import numpy as np
import SimpleITK as sitk

from nnunetv2_xdim.dataset_conversion import brats2022, camus, chaos

# ------------------------------------------------------------------------------------------------ CAMUS

CAMUS_SIZE = (12, 16)  # H, W
SPACING_2019 = (0.308, 0.154, 1.54)  # as in the release's headers: x, y, and a nominal z
SPACING_2023 = (0.31, 0.17)
INFO = "ED: 1\nES: {es}\nNbFrame: {n}\nSex: F\nAge: 61\nImageQuality: Good\nLVedv: 88.8\nLVesv: 40.9\nLVef: 54.0\n"


def camus_frame(seed, labels=False, size=CAMUS_SIZE):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4 if labels else 256, size, dtype=np.uint8)


def write_image(array, path, spacing, origin=None):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    if origin is not None:
        img.SetOrigin(origin)
    sitk.WriteImage(img, path, useCompression=path.endswith(".gz"))


def make_camus_2019(root, train=("patient0001", "patient0002", "patient0003", "patient0004", "patient0005",
                                 "patient0006"), test=("patient0451", "patient0452"), n_lists=3, size=CAMUS_SIZE):
    """training/ and testing/ with W x H x 1 .mhd/.raw frames, Info_*.cfg, sequences, subGroup lists."""
    for subset, patients in (("training", train), ("testing", test)):
        for p_i, pid in enumerate(patients):
            folder = os.path.join(root, subset, pid)
            os.makedirs(folder)
            for view in camus.VIEWS:
                with open(os.path.join(folder, f"Info_{view}.cfg"), "w") as f:
                    f.write(INFO.format(es=10, n=14))
                seq = np.stack([camus_frame(1000 + t, size=size) for t in range(3)])
                write_image(seq, os.path.join(folder, f"{pid}_{view}_sequence.mhd"), SPACING_2019)
                for instant in camus.INSTANTS:
                    seed = zlib.crc32(f"{pid}{view}{instant}".encode())
                    origin = (0.0, 0.0, 0.0) if p_i % 2 else (1.5, -2.25, 0.0)
                    stem = os.path.join(folder, f"{pid}_{view}_{instant}")
                    write_image(camus_frame(seed, size=size)[None], stem + ".mhd", SPACING_2019, origin)
                    if subset == "training":
                        write_image(camus_frame(seed + 1, labels=True, size=size)[None], stem + "_gt.mhd",
                                    SPACING_2019, origin)
    lists = os.path.join(root, "listSubGroups")
    os.makedirs(lists)
    chunks = [list(train[k::n_lists]) for k in range(n_lists)]
    for k in range(n_lists):
        others = [p for j, c in enumerate(chunks) if j != k for p in c]
        for subset, ids in (("testing", chunks[k]), ("validation", others[:1]), ("training", others[1:])):
            with open(os.path.join(lists, f"subGroup{k + 1}_{subset}.txt"), "w") as f:
                f.write("\n".join(ids) + "\n")
    return root


def make_camus_2023(root, training=("patient0001", "patient0002", "patient0003", "patient0004"),
                    validation=("patient0005", "patient0006"), testing=("patient0007", "patient0008"),
                    size=CAMUS_SIZE):
    """CAMUS_public/database_nifti with 2D ED/ES, labelled half sequences, database_split lists."""
    base = os.path.join(root, "CAMUS_public")
    for pid in training + validation + testing:
        folder = os.path.join(base, "database_nifti", pid)
        os.makedirs(folder)
        for view in camus.VIEWS:
            with open(os.path.join(folder, f"Info_{view}.cfg"), "w") as f:
                f.write(INFO.format(es=4, n=4))
            frames, gts = [], []
            for instant in camus.INSTANTS:
                seed = zlib.crc32(f"{pid}{view}{instant}".encode())
                stem = os.path.join(folder, f"{pid}_{view}_{instant}")
                frames.append(camus_frame(seed, size=size))
                gts.append(camus_frame(seed + 1, labels=True, size=size))
                write_image(frames[-1], stem + ".nii.gz", SPACING_2023)
                write_image(gts[-1], stem + "_gt.nii.gz", SPACING_2023)
            # ED, two frames in between, ES: the ends repeat the ED/ES cases
            seq = np.stack([frames[0], camus_frame(7, size=size), camus_frame(8, size=size), frames[1]])
            seq_gt = np.stack([gts[0], camus_frame(9, True, size), camus_frame(10, True, size), gts[1]])
            stem = os.path.join(folder, f"{pid}_{view}_half_sequence")
            write_image(seq, stem + ".nii.gz", (*SPACING_2023, 1.0))
            write_image(seq_gt, stem + "_gt.nii.gz", (*SPACING_2023, 1.0))
    split = os.path.join(base, "database_split")
    os.makedirs(split)
    for subset, ids in (("training", training), ("validation", validation), ("testing", testing)):
        with open(os.path.join(split, f"subgroup_{subset}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    return root


# ------------------------------------------------------------------------------------------------ CHAOS

ROWS, COLS, SLICES = 12, 16, 6
CT_STORAGE, MR_STORAGE = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# rows along x, columns tilted 20 degrees about x: the slice normal is not the z axis
OBLIQUE = (1.0, 0.0, 0.0, 0.0, float(np.cos(0.35)), float(-np.sin(0.35)))


def _ds(value):
    return f"{value:.6g}"


def write_dicom(path, pixels, position, orientation, spacing, thickness, instance, modality, intercept=0):
    from pydicom.dataset import FileDataset, FileMetaDataset  # only the CHAOS fixtures need pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_STORAGE if modality == "CT" else MR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = modality, "anonymous"
    # the release's anonymisation gives every file its own series UID: series readers cannot group them
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in orientation]
    ds.PixelSpacing = [_ds(v) for v in spacing]
    ds.SliceThickness, ds.InstanceNumber = _ds(thickness), instance
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if modality == "CT":
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", _ds(intercept), "HU"
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_series(folder, names, seed, modality, orientation=AXIAL, top=(-150.0, -120.0, 80.0), step=2.5,
                 spacing=(0.78, 0.74), shape=(ROWS, COLS)):
    """File i lies at the top minus i steps along the slice normal: file-name order is descending z."""
    os.makedirs(folder)
    normal = np.cross(orientation[:3], orientation[3:])
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        write_dicom(os.path.join(folder, name), rng.integers(0, 2000, shape), np.array(top) - i * step * normal,
                    orientation, spacing, step, i + 1, modality, intercept=-1024)


def write_masks(folder, names, seed, grey_values, shape=(ROWS, COLS)):
    os.makedirs(folder)
    rng = np.random.default_rng(seed)
    for name in names:
        grey = np.asarray(grey_values, np.uint8)[rng.integers(0, len(grey_values), shape)]
        sitk.WriteImage(sitk.GetImageFromArray(grey), os.path.join(folder, name))


def make_chaos(root, ct_train=("1", "5", "8"), ct_test=("3",), mr_train=("2", "10", "13"), mr_test=("4",),
               shape=(ROWS, COLS), slices=SLICES):
    """CHAOS_Train_Sets/Train_Sets and CHAOS_Test_Sets/Test_Sets as unzipped from the release."""
    for split, ct, mr in (("Train", ct_train, mr_train), ("Test", ct_test, mr_test)):
        base = os.path.join(root, "CHAOS_Train_Sets" if split == "Train" else "CHAOS_Test_Sets", f"{split}_Sets")
        for p in ct:
            pdir = os.path.join(base, "CT", p)
            write_series(os.path.join(pdir, "DICOM_anon"), [f"i{i:04d},0000b.dcm" for i in range(slices)],
                         int(p), "CT", shape=shape)
            if split == "Train":
                write_masks(os.path.join(pdir, "Ground"), [f"liver_GT_{i:03d}.png" for i in range(slices)],
                            100 + int(p), (0, 255), shape)
        for p in mr:
            t1 = os.path.join(base, "MR", p, "T1DUAL")
            write_series(os.path.join(t1, "DICOM_anon", "InPhase"),
                         [f"IMG-0004-{2 * i + 2:05d}.dcm" for i in range(slices)], int(p), "MR", shape=shape)
            write_series(os.path.join(t1, "DICOM_anon", "OutPhase"),
                         [f"IMG-0004-{2 * i + 1:05d}.dcm" for i in range(slices)], 50 + int(p), "MR", shape=shape)
            t2 = os.path.join(base, "MR", p, "T2SPIR")
            write_series(os.path.join(t2, "DICOM_anon"), [f"IMG-0002-{i + 1:05d}.dcm" for i in range(slices - 1)],
                         70 + int(p), "MR", orientation=OBLIQUE, top=(-160.0, -100.0, 60.0), step=7.7,
                         spacing=(1.4, 1.4), shape=shape)
            if split == "Train":
                write_masks(os.path.join(t1, "Ground"), [f"IMG-0004-{2 * i + 2:05d}.png" for i in range(slices)],
                            200 + int(p), chaos.MR_GREY, shape)
                write_masks(os.path.join(t2, "Ground"), [f"IMG-0002-{i + 1:05d}.png" for i in range(slices - 1)],
                            300 + int(p), chaos.MR_GREY, shape)
    return root


# ------------------------------------------------------------------------------------------------ BraTS

BRATS_SHAPE = (8, 16, 16)  # z, y, x
BRATS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # how SimpleITK reads BraTS' NIfTI headers
BRATS_ORIGIN = (-0.0, -239.0, 0.0)


def write_brats_image(array, path, spacing=(1.0, 1.0, 1.0), origin=BRATS_ORIGIN):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(BRATS_DIRECTION)
    sitk.WriteImage(img, path, useCompression=True)


def make_brats(root, cases, naming, labelled=True, shape=BRATS_SHAPE):
    """<root>/<case>/<case>{_,-}<channel>.nii.gz (+ seg) in the 2021 or the 2023+ naming."""
    n = brats2022.NAMINGS[naming]
    labels = sorted(n.to_nnunet)
    for k, case in enumerate(cases):
        folder = os.path.join(root, case)
        os.makedirs(folder)
        rng = np.random.default_rng(k)
        for ch in n.channels:
            write_brats_image(rng.integers(0, 3000, shape).astype(np.int16),
                              os.path.join(folder, f"{case}{n.sep}{ch}.nii.gz"))
        if labelled:
            seg = np.asarray(labels, np.uint8)[rng.integers(0, 4, shape)]
            write_brats_image(seg, os.path.join(folder, f"{case}{n.sep}seg.nii.gz"))
    return root
