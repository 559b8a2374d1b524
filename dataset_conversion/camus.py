"""CAMUS (2D echocardiography) to nnU-Net, and nnU-Net predictions back to CAMUS files.

Both releases are read:
- 2019 (.mhd/.raw): training/patientNNNN/ (with _gt labels) and testing/patientNNNN/ (without); the
  ten-fold lists listSubGroups/subGroup{k}_{training,validation,testing}.txt give the ten folds of
  splits_final.json (fold k-1 validates on subGroup{k}_testing, trains on the other training patients).
- 2023 (NIfTI): [CAMUS_public/]database_nifti/patientNNNN/ plus database_split/subgroup_{training,
  validation,testing}.txt: a single split. Testing patients go to imagesTs with their labels kept in
  labelsTs; folds 0..k-1 are seeded k-fold folds by patient over training+validation, and one more
  fold is the official training/validation split itself.
Cases are the ED and ES frames of the 2- and 4-chamber views, `patientNNNN_{2CH,4CH}_{ED,ES}`, as 2D
images with their physical pixel spacing (a 2019 frame stored as W x H x 1 becomes W x H).
With --half-sequence, the labelled 2023 half-sequence frames (ED to ES) that are not the ED or ES frame
itself become extra training cases `patientNNNN_{2CH,4CH}_half{t}`; they stay with their patient in
the folds and are never exported.
The exporter writes one file per ED/ES prediction, in the release's format (.mhd+.raw or .nii.gz),
name and exact header (read from the dataset's sidecar camus_export.json), into patientNNNN/ folders.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ._common import converter_parser, exporter_parser
from ._common import (ConversionError, DatasetOptions, add_common_arguments, add_dataset_arguments, build_dataset,
                      check_labels, cli, dataset_options, folds_of_patients, load_json, patient_level_folds,
                      prediction_files, require_dir, resolve_dataset_folder, run_parallel, staged_files,
                      visible_entries, warn)
from ._geometry import check_same_grid, grid, read_image, set_grid
from .dataset_ids import CAMUS

DEFAULT_ID, DEFAULT_NAME = CAMUS
VIEWS = ("2CH", "4CH")
INSTANTS = ("ED", "ES")
LABELS = {"background": 0, "LV_cavity": 1, "LV_myocardium": 2, "left_atrium": 3}
SIDECAR = "camus_export.json"
PATIENT_RE = re.compile(r"patient\d{4}")
HALF_RE = re.compile(r"_half\d+$")


@dataclass
class Release:
    kind: str  # "2019" or "2023"
    ext: str
    patients: dict[str, str] = field(default_factory=dict)  # patient id -> folder
    test: set[str] = field(default_factory=set)  # patients for imagesTs
    folds: list[tuple[list[str], list[str]]] | None = None  # official (train, val) patients per fold
    official_split: tuple[list[str], list[str]] | None = None  # 2023 training/validation patients


def _patient_folders(folder: str) -> dict[str, str]:
    found = {n: os.path.join(folder, n) for n in visible_entries(folder)
             if PATIENT_RE.fullmatch(n) and os.path.isdir(os.path.join(folder, n))}
    if not found:
        raise ConversionError(f"no patientNNNN folders in {folder}")
    return found


def _read_list(path: str) -> list[str]:
    with open(path) as f:
        ids = [line.strip() for line in f if line.strip()]
    bad = [i for i in ids if not PATIENT_RE.fullmatch(i)]
    if bad:
        raise ConversionError(f"{path}: {bad[0]!r} is not a patient id (expected one patientNNNN per line)")
    return ids


def _check_listed(path: str, listed: list[str], patients: dict[str, str], where: str) -> None:
    missing = [p for p in listed if p not in patients]
    if missing:
        raise ConversionError(f"{path} lists {missing[0]}, which is not in {where}")


def _release_2019(root: str) -> Release:
    rel = Release("2019", ".mhd")
    train_dir, test_dir = os.path.join(root, "training"), os.path.join(root, "testing")
    train = _patient_folders(train_dir) if os.path.isdir(train_dir) else {}
    test = _patient_folders(test_dir) if os.path.isdir(test_dir) else {}
    both = sorted(train.keys() & test.keys())
    if both:
        raise ConversionError(f"duplicate case id: {both[0]} is in both {train_dir} and {test_dir}")
    rel.patients, rel.test = {**train, **test}, set(test)
    lists = sorted(_find_files(root, re.compile(r"subGroup(\d+)_testing\.txt")).items())
    if not lists:
        if train:
            warn(f"no subGroup*_testing.txt lists under {root}: making patient-grouped folds instead")
        return rel
    rel.folds = []
    for k, test_list in lists:
        val = _read_list(test_list)
        _check_listed(test_list, val, train, train_dir)
        listed = set(val)
        for subset in ("training", "validation"):
            path = os.path.join(os.path.dirname(test_list), f"subGroup{k}_{subset}.txt")
            if not os.path.isfile(path):
                raise ConversionError(f"{path} is missing (expected next to {test_list})")
            names = _read_list(path)
            _check_listed(path, names, train, train_dir)
            listed |= set(names)
        unlisted = sorted(set(train) - listed)
        if unlisted:
            raise ConversionError(f"{unlisted[0]} (in {train_dir}) is in none of the subGroup{k}_*.txt lists")
        rel.folds.append((sorted(set(train) - set(val)), sorted(val)))
    return rel


def _find_files(root: str, pattern: re.Pattern) -> dict[int, str]:
    found: dict[int, str] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not PATIENT_RE.fullmatch(d) and not d.startswith(".")]
        for n in names:
            m = pattern.fullmatch(n)
            if m:
                k = int(m.group(1))
                if k in found:
                    raise ConversionError(f"two {n} lists: {found[k]} and {os.path.join(folder, n)}")
                found[k] = os.path.join(folder, n)
    return found


def _release_2023(base: str) -> Release:
    rel = Release("2023", ".nii.gz")
    db = os.path.join(base, "database_nifti")
    rel.patients = _patient_folders(db)
    split_dir = os.path.join(base, "database_split")
    if not os.path.isdir(split_dir):
        warn(f"{split_dir} not found: all patients are training patients")
        return rel
    subsets = {}
    for subset in ("training", "validation", "testing"):
        path = os.path.join(split_dir, f"subgroup_{subset}.txt")
        if not os.path.isfile(path):
            raise ConversionError(f"{path} is missing (expected the 2023 training/validation/testing lists)")
        subsets[subset] = _read_list(path)
        _check_listed(path, subsets[subset], rel.patients, db)
    listed = set().union(*subsets.values())
    unlisted = sorted(set(rel.patients) - listed)
    if unlisted:
        raise ConversionError(f"{unlisted[0]} (in {db}) is in none of the lists in {split_dir}")
    rel.test = set(subsets["testing"])
    rel.official_split = (sorted(subsets["training"]), sorted(subsets["validation"]))
    return rel


def find_release(root: str) -> Release:
    require_dir(root, "CAMUS folder")
    for base in (root, os.path.join(root, "CAMUS_public")):
        if os.path.isdir(os.path.join(base, "database_nifti")):
            return _release_2023(base)
    if os.path.isdir(os.path.join(root, "training")) or os.path.isdir(os.path.join(root, "testing")):
        return _release_2019(root)
    raise ConversionError(f"{root} holds no CAMUS release: expected training/ and testing/ (2019 .mhd release) or "
                          f"database_nifti/ (2023 NIfTI release, possibly under CAMUS_public/)")


def _labelled(pid: str, folder: str, ext: str) -> bool:
    """All four ED/ES frames must be there; their labels all or none."""
    gts = []
    for view in VIEWS:
        for instant in INSTANTS:
            stem = os.path.join(folder, f"{pid}_{view}_{instant}")
            if not os.path.isfile(stem + ext):
                raise ConversionError(f"missing image {stem + ext}")
            gts.append(os.path.isfile(stem + "_gt" + ext))
    if any(gts) and not all(gts):
        raise ConversionError(f"{folder}: some ED/ES frames have a _gt{ext} label and some not (expected all four "
                              f"or none)")
    return all(gts)


def _as_2d(image: sitk.Image, path: str) -> sitk.Image:
    if image.GetDimension() == 2:
        return image
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        return image[:, :, 0]
    raise ConversionError(f"{path}: size {image.GetSize()} is not a 2D frame (expected W x H or W x H x 1)")


def _load_pair(img_path: str, gt_path: str | None) -> tuple[sitk.Image, sitk.Image, np.ndarray | None]:
    """Original image, its 2D version and, when labelled, the checked uint8 label array."""
    original = read_image(img_path)
    image = _as_2d(original, img_path)
    if gt_path is None:
        return original, image, None
    if not os.path.isfile(gt_path):
        raise ConversionError(f"missing label {gt_path}")
    gt = _as_2d(read_image(gt_path), gt_path)
    check_same_grid(img_path, grid(image), gt_path, grid(gt))
    labels = sitk.GetArrayFromImage(gt)
    check_labels(labels, list(LABELS.values()), gt_path, " (CAMUS: 1 LV cavity, 2 LV myocardium, 3 left atrium)")
    return original, image, labels.astype(np.uint8)


def _write_case(out_dir: str, dest: str, case: str, image: sitk.Image, labels: np.ndarray | None) -> None:
    sitk.WriteImage(image, os.path.join(out_dir, f"images{dest}", f"{case}_0000.nii.gz"))
    if labels is not None:
        seg = sitk.GetImageFromArray(labels)
        seg.CopyInformation(image)
        sitk.WriteImage(seg, os.path.join(out_dir, f"labels{dest}", f"{case}.nii.gz"))


def _convert_view(out_dir: str, pid: str, folder: str, view: str, ext: str, dest: str, labelled: bool,
                  half_sequence: bool) -> dict:
    """Both instants (and optionally the half sequence) of one view.

    Returns the exporter's records of the ED/ES cases and the extra half-sequence cases written."""
    records, frames, extra = {}, [], []
    for instant in INSTANTS:
        case = f"{pid}_{view}_{instant}"
        stem = os.path.join(folder, case)
        original, image, labels = _load_pair(stem + ext, stem + "_gt" + ext if labelled else None)
        _write_case(out_dir, dest, case, image, labels)
        frames.append(sitk.GetArrayFromImage(image))
        records[case] = {"patient": pid, "ext": ext, **grid(original)}
    if half_sequence:
        stem = os.path.join(folder, f"{pid}_{view}_half_sequence")
        seq, gt = read_image(stem + ext), None
        if os.path.isfile(stem + "_gt" + ext):
            gt = read_image(stem + "_gt" + ext)
        else:
            raise ConversionError(f"missing label {stem}_gt{ext} (needed by --half-sequence)")
        if seq.GetDimension() != 3:
            raise ConversionError(f"{stem + ext}: size {seq.GetSize()} is not a W x H x T sequence")
        check_same_grid(stem + ext, grid(seq), stem + "_gt" + ext, grid(gt))
        seq_labels = sitk.GetArrayFromImage(gt)
        check_labels(seq_labels, list(LABELS.values()), stem + "_gt" + ext)
        for t in range(seq.GetSize()[2]):
            frame = seq[:, :, t]
            if any(np.array_equal(sitk.GetArrayFromImage(frame), f) for f in frames):
                continue  # the sequence starts at ED and ends at ES, which are cases already
            extra.append(f"{pid}_{view}_half{t:02d}")
            _write_case(out_dir, dest, extra[-1], frame, seq_labels[t].astype(np.uint8))
    return {"patient": pid, "records": records, "extra": extra}


def convert(input_dir: str, opts: DatasetOptions, n_folds: int = 5, half_sequence: bool = False) -> str:
    rel = find_release(input_dir)
    if half_sequence and rel.kind != "2023":
        raise ConversionError("--half-sequence needs the 2023 NIfTI release (the 2019 sequences are unlabelled)")
    jobs, cases_by_patient = [], {}
    for pid, folder in sorted(rel.patients.items()):
        labelled = _labelled(pid, folder, rel.ext)
        train = pid not in rel.test
        if train and not labelled:
            raise ConversionError(f"missing labels in {folder}: training patients need "
                                  f"{pid}_{{2CH,4CH}}_{{ED,ES}}_gt{rel.ext}")
        for view in VIEWS:
            jobs.append((pid, folder, view, rel.ext, "Tr" if train else "Ts", labelled, half_sequence and train))
        if train:
            cases_by_patient[pid] = [f"{pid}_{v}_{i}" for v in VIEWS for i in INSTANTS]
    if not cases_by_patient:
        raise ConversionError(f"no training patients in {input_dir}")
    folds = _patient_level_folds(rel, sorted(cases_by_patient), n_folds)

    def splits(results: list) -> list[dict]:
        # half-sequence frames only train: validation, like the challenge, scores ED and ES
        extra = {}
        for r in results:
            extra.setdefault(r["patient"], []).extend(r["extra"])
        return [folds_of_patients(t, v, cases_by_patient, extra) for t, v in folds]

    dataset_json = dict(channel_names={0: "echo"}, labels=dict(LABELS), file_ending=".nii.gz",
                        dataset_name=opts.folder_name, overwrite_image_reader_writer="SimpleITKIO",
                        reference="https://www.creatis.insa-lyon.fr/Challenge/camus/",
                        license="see https://www.creatis.insa-lyon.fr/Challenge/camus/",
                        description=f"CAMUS {rel.kind} release: ED/ES frames of the 2CH and 4CH views as 2D cases"
                                    + (", plus labelled half-sequence frames" if half_sequence else ""))
    sidecar = (SIDECAR, lambda results: {"release": rel.kind,
                                         "cases": {k: v for r in results for k, v in r["records"].items()}})
    return build_dataset(opts, _convert_view, jobs, dataset_json, splits if half_sequence else splits([]), sidecar)


def _patient_level_folds(rel: Release, patients: list[str], n_folds: int) -> list[tuple[list, list]]:
    """The 2019 lists as they are; otherwise seeded folds by patient, plus the 2023 official split."""
    if rel.folds is not None:
        return rel.folds
    folds = patient_level_folds(patients, n_folds)
    if rel.official_split is not None:
        folds.append(rel.official_split)
    return folds


# ---------------------------------------------------------------------------------------------- exporter


def _export_case(out_dir: str, pred_path: str, rel_path: str, record: dict) -> None:
    labels = sitk.GetArrayFromImage(read_image(pred_path))
    size = record["size"]
    if labels.ndim == 3 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.shape != (size[1], size[0]):
        raise ConversionError(f"{pred_path}: shape {labels.shape} instead of {(size[1], size[0])} (H x W of the "
                              f"original frame)")
    check_labels(labels, list(LABELS.values()), pred_path)
    labels = labels.astype(np.uint8)
    image = set_grid(sitk.GetImageFromArray(labels[None] if len(size) == 3 else labels), record)
    path = os.path.join(out_dir, rel_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sitk.WriteImage(image, path, useCompression=record["ext"] != ".mhd")


def export(pred_dir: str, out_dir: str, dataset: str = str(DEFAULT_ID), overwrite: bool = False,
           num_processes: int = 1) -> list[str]:
    folder = resolve_dataset_folder(dataset)
    records = load_json(os.path.join(folder, SIDECAR), "CAMUS export sidecar (written by the converter)")["cases"]
    jobs, planned, skipped = [], [], 0
    for name in prediction_files(pred_dir):
        case = name[:-len(".nii.gz")]
        if HALF_RE.search(case):
            skipped += 1
            continue
        if case not in records:
            raise ConversionError(f"{os.path.join(pred_dir, name)}: {case} is not an ED/ES case of {folder}")
        record = records[case]
        rel_path = os.path.join(record["patient"], case + record["ext"])
        jobs.append((os.path.join(pred_dir, name), rel_path, record))
        planned += [rel_path] + ([rel_path[:-4] + ".raw"] if record["ext"] == ".mhd" else [])
    if skipped:
        print(f"skipped {skipped} half-sequence frame prediction(s): the challenge evaluates ED and ES only")
    with staged_files(out_dir, planned, overwrite) as tmp:
        run_parallel(_export_case, [(tmp, *job) for job in jobs], num_processes, "export CAMUS")
    print(f"wrote {len(jobs)} CAMUS segmentation(s) to {out_dir}")
    return [os.path.join(out_dir, job[1]) for job in jobs]


# ------------------------------------------------------------------------------------------------- CLIs


def _converter_parser() -> argparse.ArgumentParser:
    p = converter_parser("nnunetv2_xdim_convert_camus", __doc__,
                         "CAMUS root: the folder with training/ and testing/ (2019) or with database_nifti/ (2023)")
    p.add_argument("--half-sequence", action="store_true",
                   help="2023 only: add the labelled half-sequence frames as extra training cases")
    add_dataset_arguments(p, DEFAULT_ID, DEFAULT_NAME)
    return p


def main(argv=None) -> None:
    cli(_converter_parser(), lambda a: convert(a.input, dataset_options(a), a.folds, a.half_sequence), argv)


def _exporter_parser() -> argparse.ArgumentParser:
    p = exporter_parser("nnunetv2_xdim_export_camus",
                        "Turn nnUNetv2_predict output on a CAMUS dataset back into CAMUS files "
                                            "(patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}.mhd/.raw or .nii.gz, "
                                            "with the original headers).")
    p.add_argument("-d", "--dataset", default=str(DEFAULT_ID),
                   help=f"the converted dataset (id, DatasetXXX_Name in $nnUNet_raw, or folder; default "
                        f"{DEFAULT_ID}); its {SIDECAR} holds the original file headers")
    add_common_arguments(p)
    return p


def export_main(argv=None) -> None:
    cli(_exporter_parser(), lambda a: export(a.input, a.output, a.dataset, a.overwrite, a.num_processes), argv)
