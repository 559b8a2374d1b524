"""CHAOS (abdominal CT and MR; DICOM slices, PNG masks) to nnU-Net, and predictions back to PNG submissions.

Release layout (Train_Sets/ and Test_Sets/, the latter without Ground/):
  CT/<id>/DICOM_anon/*.dcm  + CT/<id>/Ground/liver_GT_NNN.png               (liver)
  MR/<id>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/*.dcm + MR/<id>/T1DUAL/Ground/*.png
  MR/<id>/T2SPIR/DICOM_anon/*.dcm + MR/<id>/T2SPIR/Ground/*.png
MR grey values: liver 55-70 (63), right kidney 110-135 (126), left kidney 175-200 (189), spleen 240-255
(252); CT masks: any non-zero value is liver, as in the organisers' evaluation.

The i-th mask (in file-name order) belongs to the i-th DICOM file in file-name order, not to the i-th slice
by position (the files run in descending z). Each volume is stacked by slice position with its geometry
taken from ImagePositionPatient/ImageOrientationPatient/PixelSpacing, and the masks follow the same
permutation. T1DUAL has one mask stack for both phases; it pairs with the in-phase files, whose slice
positions the out-phase series must share.

Datasets: CT (502) `CT_<id>`; MR (503) one single-channel case per sequence, `MR_<id>_T1in`,
`MR_<id>_T1out`, `MR_<id>_T2`, grouped by patient in the folds; with --t1-channels, MR (505) T1 in-phase and
out-phase as the two channels of `MR_<id>_T1` (T2-SPIR has its own grid, so it is left out).
The sidecar chaos_slices.json keeps each case's DICOM file names and the voxel slice of each file.
The exporter writes Task<k>/<CT|MR>/<id>/[T1DUAL|T2SPIR/]Results/imgNNN.png, one PNG per DICOM file in
file-name order, with the organ grey values (liver-only tasks 1-3: liver only).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ._common import converter_parser, exporter_parser
from ._common import (ConversionError, DatasetOptions, add_common_arguments, add_dataset_arguments, build_dataset,
                      check_labels, cli, dataset_options, files_with_suffix, load_json, patient_folds,
                      prediction_files, require_dir, resolve_dataset_folder, run_parallel, staged_files,
                      visible_entries)
from ._dicom import read_series
from ._geometry import check_same_grid, read_image, set_grid
from .dataset_ids import CHAOS_CT, CHAOS_MR, CHAOS_MR_T1DUAL

DATASETS = {"CT": CHAOS_CT, "MR": CHAOS_MR, "MR_T1": CHAOS_MR_T1DUAL}
CT_LABELS = {"background": 0, "liver": 1}
MR_LABELS = {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
MR_GREY_RANGES = {1: (55, 70), 2: (110, 135), 3: (175, 200), 4: (240, 255)}
MR_GREY = np.array([0, 63, 126, 189, 252], dtype=np.uint8)
CT_GREY = np.array([0, 255], dtype=np.uint8)
TASKS = {"CT": (1, 2, 4), "MR": (1, 3, 4, 5)}
LIVER_ONLY_TASKS = (1, 2, 3)
SIDECAR = "chaos_slices.json"


@dataclass
class Series:
    case: str
    patient: str  # the release's folder name
    split: str  # "Train" or "Test"
    modality: str  # "CT" or "MR"
    sequence: str  # "CT", "T1DUAL" or "T2SPIR"
    phase: str | None  # "InPhase"/"OutPhase" for single-channel T1 cases
    channels: list[str]  # one DICOM folder per channel
    pairing: str  # DICOM folder whose file-name order the masks follow
    ground: str | None

    @property
    def group(self) -> str:
        """The patient, for the folds."""
        return f"{self.modality}_{self.patient}"


def _padded(patient: str) -> str:
    return patient.zfill(3) if patient.isdigit() else patient


def find_sets(root: str) -> dict[str, str]:
    require_dir(root, "CHAOS folder")
    sets = {}
    for split in ("Train", "Test"):
        for base in [root] + [os.path.join(root, n) for n in visible_entries(root)]:
            if os.path.isdir(os.path.join(base, f"{split}_Sets")):
                sets[split] = os.path.join(base, f"{split}_Sets")
                break
    if not sets:
        raise ConversionError(f"{root} holds no CHAOS release: expected Train_Sets/ and/or Test_Sets/ (here or one "
                              f"folder down)")
    return sets


def _existing(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise ConversionError(f"missing {what} folder {path}")
    return path


def discover(root: str, modality: str, t1_channels: bool = False) -> list[Series]:
    found: list[Series] = []
    sets = find_sets(root)
    for split, set_dir in sets.items():
        mod_dir = os.path.join(set_dir, modality)
        if not os.path.isdir(mod_dir):
            continue
        for patient in visible_entries(mod_dir):
            pdir = os.path.join(mod_dir, patient)
            if os.path.isdir(pdir):
                found += _patient_series(pdir, patient, split, modality, t1_channels)
    if not found:
        raise ConversionError(f"no {modality} patients in {' or '.join(sets.values())} (expected "
                              f"{modality}/<id>/ folders)")
    seen: dict[str, Series] = {}
    for s in found:
        if s.case in seen:
            raise ConversionError(f"duplicate case id {s.case}: {seen[s.case].channels[0]} and {s.channels[0]}")
        seen[s.case] = s
    return found


def _ground(folder: str, split: str) -> str | None:
    if split == "Train":
        return _existing(folder, "mask")
    return folder if os.path.isdir(folder) else None


def _patient_series(pdir: str, patient: str, split: str, modality: str, t1_channels: bool) -> list[Series]:
    pid = _padded(patient)
    if modality == "CT":
        dicom = _existing(os.path.join(pdir, "DICOM_anon"), "DICOM")
        return [Series(f"CT_{pid}", patient, split, "CT", "CT", None, [dicom], dicom,
                       _ground(os.path.join(pdir, "Ground"), split))]
    t1 = os.path.join(pdir, "T1DUAL")
    in_phase = _existing(os.path.join(t1, "DICOM_anon", "InPhase"), "DICOM")
    out_phase = _existing(os.path.join(t1, "DICOM_anon", "OutPhase"), "DICOM")
    t1_ground = _ground(os.path.join(t1, "Ground"), split)
    if t1_channels:
        return [Series(f"MR_{pid}_T1", patient, split, "MR", "T1DUAL", None, [in_phase, out_phase], in_phase,
                       t1_ground)]
    t2 = os.path.join(pdir, "T2SPIR")
    t2_dicom = _existing(os.path.join(t2, "DICOM_anon"), "DICOM")
    return [Series(f"MR_{pid}_T1in", patient, split, "MR", "T1DUAL", "InPhase", [in_phase], in_phase, t1_ground),
            Series(f"MR_{pid}_T1out", patient, split, "MR", "T1DUAL", "OutPhase", [out_phase], in_phase, t1_ground),
            Series(f"MR_{pid}_T2", patient, split, "MR", "T2SPIR", None, [t2_dicom], t2_dicom,
                   _ground(os.path.join(t2, "Ground"), split))]


def grey_to_labels(grey: np.ndarray, modality: str, path: str) -> np.ndarray:
    if modality == "CT":
        return (grey > 0).astype(np.uint8)
    labels = np.zeros(grey.shape, np.uint8)
    known = grey == 0
    for label, (low, high) in MR_GREY_RANGES.items():
        inside = (grey >= low) & (grey <= high)
        labels[inside] = label
        known |= inside
    if not known.all():
        raise ConversionError(f"{path}: grey value(s) {np.unique(grey[~known]).tolist()} match no organ; expected 0, "
                              f"liver 55-70, right kidney 110-135, left kidney 175-200 or spleen 240-255")
    return labels


def read_masks(folder: str, dicom_folder: str, n_files: int, shape: tuple[int, int], modality: str) -> np.ndarray:
    """Label slices in file-name order; mask i belongs to DICOM file i of dicom_folder."""
    names = files_with_suffix(folder, ".png")
    if len(names) != n_files:
        raise ConversionError(f"{folder}: {len(names)} PNG masks for {n_files} DICOM files in {dicom_folder} "
                              f"(mask i pairs with the i-th DICOM file by name, so the counts must match)")
    slices = []
    for name in names:
        path = os.path.join(folder, name)
        image = read_image(path)
        grey = sitk.GetArrayFromImage(image)
        if image.GetNumberOfComponentsPerPixel() != 1 or grey.shape != shape:
            raise ConversionError(f"{path}: {grey.shape} with {image.GetNumberOfComponentsPerPixel()} channel(s), "
                                  f"expected a grey {shape[0]} x {shape[1]} mask like the DICOM slices")
        slices.append(grey_to_labels(grey, modality, path))
    return np.stack(slices)


def _record(s: Series, pairing) -> dict:
    return {"modality": s.modality, "patient": s.patient, "split": s.split, "sequence": s.sequence,
            "phase": s.phase, "dicom_files": pairing.files, "z_index": pairing.z_index,
            "size": pairing.grid["size"]}


def _pairing_series(s: Series, first):
    """The series that fixes the mask order: the first channel itself, or the in-phase files for T1 out-phase."""
    if s.pairing == s.channels[0]:
        return first
    pairing = read_series(s.pairing, pixels=False)
    check_same_grid(first.folder, first.grid, pairing.folder, pairing.grid)
    return pairing


def _convert_series(out_dir: str, s: Series) -> dict:
    dest = "Tr" if s.split == "Train" else "Ts"
    channels = [read_series(folder) for folder in s.channels]
    ref = channels[0]
    for c, ch in enumerate(channels):
        check_same_grid(ref.folder, ref.grid, ch.folder, ch.grid)
        image = set_grid(sitk.GetImageFromArray(ch.volume), ref.grid)
        sitk.WriteImage(image, os.path.join(out_dir, f"images{dest}", f"{s.case}_{c:04d}.nii.gz"))
    pairing = _pairing_series(s, ref)
    record = _record(s, pairing)
    if s.ground is not None:
        x, y, z = ref.grid["size"]
        masks = read_masks(s.ground, pairing.folder, z, (y, x), s.modality)
        seg = set_grid(sitk.GetImageFromArray(masks[pairing.order]), ref.grid)
        sitk.WriteImage(seg, os.path.join(out_dir, f"labels{dest}", f"{s.case}.nii.gz"))
        record["ground_files"] = files_with_suffix(s.ground, ".png")
    return {s.case: record}


def convert(input_dir: str, opts: DatasetOptions, modality: str = "CT", t1_channels: bool = False,
            n_folds: int = 5) -> str:
    if modality not in ("CT", "MR") or (t1_channels and modality != "MR"):
        raise ConversionError("modality must be CT or MR; --t1-channels needs MR")
    series = discover(input_dir, modality, t1_channels)
    cases_by_patient: dict[str, list[str]] = {}
    for s in series:
        if s.split == "Train":
            cases_by_patient.setdefault(s.group, []).append(s.case)
    if modality == "CT":
        channel_names, labels = {0: "CT"}, CT_LABELS
    elif t1_channels:
        channel_names, labels = {0: "T1_in_phase", 1: "T1_out_phase"}, MR_LABELS
    else:
        channel_names, labels = {0: "MR"}, MR_LABELS
    dataset_json = dict(channel_names=channel_names, labels=dict(labels), file_ending=".nii.gz",
                        dataset_name=opts.folder_name, overwrite_image_reader_writer="SimpleITKIO",
                        reference="https://chaos.grand-challenge.org/",
                        license="see https://chaos.grand-challenge.org/Data/",
                        description=f"CHAOS {modality}" + (", T1-DUAL in/out phase as two channels" if t1_channels
                                                           else ""))
    sidecar = (SIDECAR, lambda results: {k: v for r in results for k, v in r.items()})
    return build_dataset(opts, _convert_series, [(s,) for s in series], dataset_json,
                         patient_folds(cases_by_patient, n_folds), sidecar)


# ---------------------------------------------------------------------------------------------- exporter


def _records_from_raw(root: str, cases: set[str]) -> dict[str, dict]:
    """Exporter records read from the release itself (DICOM headers only), for the kinds of case predicted."""
    kinds = {("CT", False): "CT_", ("MR", False): ("_T1in", "_T1out", "_T2"), ("MR", True): "_T1"}
    records = {}
    for (modality, t1_channels), marker in kinds.items():
        wanted = {c for c in cases if (c.startswith(marker) if modality == "CT" else
                                       c.startswith("MR_") and c.endswith(marker))}
        if wanted:
            for s in discover(root, modality, t1_channels):
                if s.case in wanted:
                    records[s.case] = _record(s, read_series(s.pairing, pixels=False))
    return records


def _export_series(out_dir: str, pred_path: str, record: dict, targets: list[tuple[str, bool]]) -> None:
    labels = sitk.GetArrayFromImage(read_image(pred_path))
    x, y, z = record["size"]
    if labels.shape != (z, y, x):
        raise ConversionError(f"{pred_path}: shape {labels.shape} instead of {(z, y, x)} (the DICOM series of "
                              f"{record['modality']} patient {record['patient']}, {record['sequence']})")
    ct = record["modality"] == "CT"
    check_labels(labels, list((CT_LABELS if ct else MR_LABELS).values()), pred_path)
    width = max(3, len(str(z - 1)))
    for folder, liver_only in targets:
        lut = CT_GREY if ct else MR_GREY.copy()
        if liver_only and not ct:
            lut[2:] = 0
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
        for i, k in enumerate(record["z_index"]):  # PNG i belongs to DICOM file i in file-name order
            sitk.WriteImage(sitk.GetImageFromArray(lut[labels[k]]), os.path.join(out_dir, folder,
                                                                                 f"img{i:0{width}d}.png"))


def export(pred_dir: str, out_dir: str, dataset: str | None = None, raw: str | None = None,
           tasks: list[int] | None = None, t1dual_phase: str = "InPhase", overwrite: bool = False,
           num_processes: int = 1) -> list[str]:
    """Write the PNG submission; the slice order comes from the release (raw) or the dataset's sidecar."""
    names = prediction_files(pred_dir)
    cases = {n[:-len(".nii.gz")]: os.path.join(pred_dir, n) for n in names}
    if raw is not None:
        records = _records_from_raw(raw, set(cases))
    elif dataset is not None:
        records = load_json(os.path.join(resolve_dataset_folder(dataset), SIDECAR),
                            "CHAOS slice sidecar (written by the converter)")
    else:
        raise ConversionError("the slice order comes from the converted dataset (-d) or the CHAOS release (--raw)")
    unknown = sorted(set(cases) - set(records))
    if unknown:
        raise ConversionError(f"{cases[unknown[0]]}: {unknown[0]} is not a case of "
                              f"{raw or dataset} (expected CT_<id>, MR_<id>_T1in/T1out/T2 or MR_<id>_T1)")
    jobs, planned = [], []
    for case, record in sorted(_choose_t1(cases, records, t1dual_phase).items()):
        targets = []
        for task in TASKS[record["modality"]]:
            if tasks is None or task in tasks:
                parts = [f"Task{task}", record["modality"], record["patient"]]
                parts += [] if record["modality"] == "CT" else [record["sequence"]]
                targets.append((os.path.join(*parts, "Results"), task in LIVER_ONLY_TASKS))
        if not targets:
            raise ConversionError(f"none of tasks {tasks} takes {record['modality']} results (CT: "
                                  f"{TASKS['CT']}, MR: {TASKS['MR']})")
        width = max(3, len(str(len(record["z_index"]) - 1)))
        planned += [os.path.join(folder, f"img{i:0{width}d}.png") for folder, _ in targets
                    for i in range(len(record["z_index"]))]
        jobs.append((cases[case], record, targets))
    with staged_files(out_dir, planned, overwrite) as tmp:
        run_parallel(_export_series, [(tmp, *job) for job in jobs], num_processes, "export CHAOS")
    print(f"wrote {len(planned)} PNG(s) of {len(jobs)} series to {out_dir}")
    return sorted(planned)


def _choose_t1(cases: dict[str, str], records: dict, phase: str) -> dict[str, dict]:
    """One T1DUAL result per patient: the requested phase's prediction when both phases were predicted."""
    chosen, unused = {}, 0
    for case in cases:
        record = records[case]
        if record["phase"] is None or record["phase"] == phase:
            chosen[case] = record
            continue
        partner = next((c for c in cases if records[c]["patient"] == record["patient"]
                        and records[c]["sequence"] == "T1DUAL" and records[c]["phase"] in (None, phase)), None)
        if partner is None:
            raise ConversionError(f"{cases[case]} is a T1DUAL {record['phase']} prediction but the {phase} one is "
                                  f"missing; pass --t1dual-phase {record['phase']} to export from it")
        unused += 1
    if unused:
        print(f"T1DUAL results come from the {phase} predictions; {unused} other-phase prediction(s) not used")
    return chosen


# ------------------------------------------------------------------------------------------------- CLIs


def _converter_parser() -> argparse.ArgumentParser:
    p = converter_parser("nnunetv2_xdim_convert_chaos", __doc__, "CHAOS root with Train_Sets/ and/or Test_Sets/")
    p.add_argument("-m", "--modality", choices=("CT", "MR"), required=True)
    p.add_argument("--t1-channels", action="store_true",
                   help=f"MR: T1-DUAL in/out phase as two channels of one case (default id {CHAOS_MR_T1DUAL.id}; "
                        f"no T2-SPIR)")
    add_dataset_arguments(p, None, None, f"CT {CHAOS_CT.id} {CHAOS_CT.name}, MR {CHAOS_MR.id} {CHAOS_MR.name}, "
                                         f"MR --t1-channels {CHAOS_MR_T1DUAL.id} {CHAOS_MR_T1DUAL.name}")
    return p


def main(argv=None) -> None:
    def run(a):
        key = "MR_T1" if a.t1_channels else a.modality
        a.dataset_id = a.dataset_id or DATASETS[key][0]
        a.name = a.name or DATASETS[key][1]
        convert(a.input, dataset_options(a), a.modality, a.t1_channels, a.folds)

    cli(_converter_parser(), run, argv)


def _exporter_parser() -> argparse.ArgumentParser:
    p = exporter_parser("nnunetv2_xdim_export_chaos",
                        "Turn nnUNetv2_predict output on a CHAOS dataset into the PNG submission "
                                            "tree Task<k>/<CT|MR>/<id>/[T1DUAL|T2SPIR/]Results/imgNNN.png.",
                        "submission folder (CT and MR exports may share it)")
    p.add_argument("-d", "--dataset", help=f"the converted dataset (id, DatasetXXX_Name in $nnUNet_raw, or "
                                           f"folder) whose {SIDECAR} gives the slice order")
    p.add_argument("--raw", help="CHAOS release folder: read the slice order from the DICOM files instead")
    p.add_argument("--tasks", type=int, nargs="+", choices=(1, 2, 3, 4, 5),
                   help="challenge tasks to write (default: all that take this modality: CT 1 2 4, MR 1 3 4 5; "
                        "tasks 1-3 keep the liver only)")
    p.add_argument("--t1dual-phase", choices=("InPhase", "OutPhase"), default="InPhase",
                   help="with single-channel MR predictions, which phase's prediction becomes the T1DUAL result")
    add_common_arguments(p)
    return p


def export_main(argv=None) -> None:
    cli(_exporter_parser(), lambda a: export(a.input, a.output, a.dataset, a.raw, a.tasks, a.t1dual_phase,
                                             a.overwrite, a.num_processes), argv)
