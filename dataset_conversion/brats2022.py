"""BraTS 2022 (glioma MRI) to nnU-Net with region-based training, and predictions back to BraTS labels.

Case folders, in one or several input folders (training and validation downloads):
  2021 naming (BraTS 2021/2022): BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz, labels
      0, 1 necrosis, 2 oedema, 4 enhancing tumour;
  2023+ naming: BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-{t1n,t1c,t2w,t2f,seg}.nii.gz, labels 0/1/2/3.
Channels 0-3: T1, T1ce, T2, FLAIR. Cases with a seg go to imagesTr/labelsTr, the others (validation) to
imagesTs. Labels become nnU-Net's nested region order (as in nnU-Net's Dataset137_BraTS21): 1 oedema,
2 non-enhancing core, 3 enhancing, trained as the regions whole tumour {1,2,3}, tumour core {2,3} and
enhancing tumour {3} with regions_class_order (1, 2, 3). Folds group cases by patient (the 2023+
naming's XXXXX; its YYY is the time point). Images are copied unchanged when their grids agree.
The exporter maps predictions back to 0/1/2/4 (2021 naming) or 0/1/2/3 (2023+ naming), named <case>.nii.gz;
given the release folders (--raw), it also restores their exact geometry and checks every case is there.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ._common import converter_parser, exporter_parser
from ._common import (ConversionError, DatasetOptions, add_common_arguments, add_dataset_arguments, build_dataset,
                      check_labels, cli, dataset_options, patient_folds, prediction_files, require_dir, run_parallel,
                      staged_files, visible_entries)
from ._geometry import check_same_grid, grid, read_header, read_image, set_grid
from .dataset_ids import BRATS2022

DEFAULT_ID, DEFAULT_NAME = BRATS2022


@dataclass(frozen=True)
class Naming:
    pattern: re.Pattern
    sep: str
    channels: tuple[str, ...]
    to_nnunet: dict[int, int]  # BraTS label -> nnU-Net label

    def patient(self, case: str) -> str:
        return case.rsplit("-", 1)[0] if self.sep == "-" else case


NAMINGS = {
    "2021": Naming(re.compile(r"BraTS20\d\d_\d+"), "_", ("t1", "t1ce", "t2", "flair"), {0: 0, 1: 2, 2: 1, 4: 3}),
    "2023": Naming(re.compile(r"BraTS-[A-Z]+-\d+-\d+"), "-", ("t1n", "t1c", "t2w", "t2f"), {0: 0, 1: 2, 2: 1, 3: 3}),
}
LABEL_MEANING = {"2021": " (BraTS 2021 naming: 1 necrosis, 2 oedema, 4 enhancing)",
                 "2023": " (BraTS 2023+ naming: 1 non-enhancing core, 2 oedema, 3 enhancing)"}


def naming_of(case: str) -> str | None:
    return next((k for k, n in NAMINGS.items() if n.pattern.fullmatch(case)), None)


@dataclass
class Case:
    case: str
    folder: str
    naming: str

    def path(self, part: str) -> str:
        n = NAMINGS[self.naming]
        return os.path.join(self.folder, f"{self.case}{n.sep}{part}.nii.gz")

    @property
    def images(self) -> list[str]:
        return [self.path(ch) for ch in NAMINGS[self.naming].channels]

    @property
    def seg(self) -> str:
        return self.path("seg")


def discover(input_dirs: list[str]) -> list[Case]:
    cases: dict[str, Case] = {}
    for input_dir in input_dirs:
        require_dir(input_dir, "BraTS folder")
        found = 0
        for name in visible_entries(input_dir):
            naming = naming_of(name)
            if naming is None or not os.path.isdir(os.path.join(input_dir, name)):
                continue
            found += 1
            if name in cases:
                raise ConversionError(f"duplicate case id {name}: {cases[name].folder} and "
                                      f"{os.path.join(input_dir, name)}")
            case = Case(name, os.path.join(input_dir, name), naming)
            for path in case.images:
                if not os.path.isfile(path):
                    raise ConversionError(f"missing image {path}")
            cases[name] = case
        if not found:
            raise ConversionError(f"no BraTS case folders in {input_dir} (expected BraTS2021_XXXXX/ or "
                                  f"BraTS-GLI-XXXXX-YYY/ folders)")
    return list(cases.values())


def _convert_case(out_dir: str, c: Case) -> None:
    labelled = os.path.isfile(c.seg)
    dest = "Tr" if labelled else "Ts"
    ref = grid(read_header(c.images[0]))
    for i, path in enumerate(c.images):
        header = grid(read_header(path))
        check_same_grid(c.images[0], ref, path, header)
        target = os.path.join(out_dir, f"images{dest}", f"{c.case}_{i:04d}.nii.gz")
        if header == ref:
            shutil.copyfile(path, target)
        else:  # within tolerance: give all channels the first one's grid, as nnU-Net compares them exactly
            sitk.WriteImage(set_grid(read_image(path), ref), target)
    if labelled:
        seg = read_image(c.seg)
        check_same_grid(c.images[0], ref, c.seg, grid(seg))
        labels = sitk.GetArrayFromImage(seg)
        mapping = NAMINGS[c.naming].to_nnunet
        check_labels(labels, list(mapping), c.seg, LABEL_MEANING[c.naming])
        lut = np.zeros(max(mapping) + 1, np.uint8)
        for brats, nnunet in mapping.items():
            lut[brats] = nnunet
        out = set_grid(sitk.GetImageFromArray(lut[labels.astype(np.int64)]), ref)
        sitk.WriteImage(out, os.path.join(out_dir, f"labels{dest}", f"{c.case}.nii.gz"))


def convert(input_dirs: list[str], opts: DatasetOptions, n_folds: int = 5) -> str:
    cases = discover(input_dirs)
    cases_by_patient: dict[str, list[str]] = {}
    for c in cases:
        if os.path.isfile(c.seg):
            cases_by_patient.setdefault(NAMINGS[c.naming].patient(c.case), []).append(c.case)
    dataset_json = dict(channel_names={0: "T1", 1: "T1ce", 2: "T2", 3: "FLAIR"},
                        labels={"background": 0, "whole tumor": (1, 2, 3), "tumor core": (2, 3),
                                "enhancing tumor": (3,)},
                        regions_class_order=(1, 2, 3), file_ending=".nii.gz", dataset_name=opts.folder_name,
                        overwrite_image_reader_writer="SimpleITKIO",
                        reference="https://www.synapse.org/brats", license="see https://www.synapse.org/brats",
                        description="BraTS glioma MRI; labels: 1 oedema, 2 non-enhancing core, 3 enhancing "
                                    "(nested for the regions)")
    return build_dataset(opts, _convert_case, [(c,) for c in cases], dataset_json,
                         patient_folds(cases_by_patient, n_folds))


# ---------------------------------------------------------------------------------------------- exporter


def _export_case(out_dir: str, pred_path: str, case: str, naming: str, reference: str | None) -> None:
    pred = read_image(pred_path)
    labels = sitk.GetArrayFromImage(pred)
    check_labels(labels, [0, 1, 2, 3], pred_path, " (nnU-Net BraTS labels: 1 oedema, 2 core, 3 enhancing)")
    lut = np.zeros(4, np.uint8)
    for brats, nnunet in NAMINGS[naming].to_nnunet.items():
        lut[nnunet] = brats
    out = sitk.GetImageFromArray(lut[labels.astype(np.int64)])
    if reference is None:
        out.CopyInformation(pred)
    else:
        ref = grid(read_header(reference))
        check_same_grid(reference, ref, pred_path, grid(pred))
        set_grid(out, ref)
    sitk.WriteImage(out, os.path.join(out_dir, f"{case}.nii.gz"))


def export(pred_dir: str, out_dir: str, convention: str = "auto", raw: list[str] | None = None,
           overwrite: bool = False, num_processes: int = 1) -> list[str]:
    cases = {n[:-len(".nii.gz")]: os.path.join(pred_dir, n) for n in prediction_files(pred_dir)}
    references = {c.case: c.images[0] for c in discover(raw)} if raw else None
    if references is not None:
        unknown, missing = sorted(set(cases) - set(references)), sorted(set(references) - set(cases))
        if unknown:
            raise ConversionError(f"{cases[unknown[0]]}: {unknown[0]} is not a case of {', '.join(raw)}")
        if missing:
            raise ConversionError(f"{len(missing)} case(s) of {', '.join(raw)} have no prediction in {pred_dir}, "
                                  f"e.g. {missing[0]}")
    jobs = []
    for case, path in sorted(cases.items()):
        naming = convention if convention != "auto" else naming_of(case)
        if naming is None:
            raise ConversionError(f"{path}: cannot tell the BraTS naming of {case!r}; pass --convention 2021 or 2023")
        jobs.append((path, case, naming, references[case] if references else None))
    with staged_files(out_dir, [f"{case}.nii.gz" for case in cases], overwrite) as tmp:
        run_parallel(_export_case, [(tmp, *job) for job in jobs], num_processes, "export BraTS")
    print(f"wrote {len(jobs)} BraTS segmentation(s) to {out_dir}")
    return [os.path.join(out_dir, f"{case}.nii.gz") for case in sorted(cases)]


# ------------------------------------------------------------------------------------------------- CLIs


def _converter_parser() -> argparse.ArgumentParser:
    p = converter_parser("nnunetv2_xdim_convert_brats2022", __doc__,
                         "folder(s) holding BraTS case folders, e.g. the training and the validation download",
                         multiple_inputs=True)
    add_dataset_arguments(p, DEFAULT_ID, DEFAULT_NAME)
    return p


def main(argv=None) -> None:
    cli(_converter_parser(), lambda a: convert(a.input, dataset_options(a), a.folds), argv)


def _exporter_parser() -> argparse.ArgumentParser:
    p = exporter_parser("nnunetv2_xdim_export_brats2022",
                        "Turn nnUNetv2_predict output on a BraTS dataset into BraTS submission "
                                            "files <case>.nii.gz with the BraTS labels.")
    p.add_argument("--convention", choices=("auto", "2021", "2023"), default="auto",
                   help="label convention: 2021 gives 0/1/2/4, 2023 gives 0/1/2/3 (default: from each case's "
                        "naming)")
    p.add_argument("--raw", nargs="+", help="the BraTS case folder(s) that were predicted: copy their exact "
                                            "geometry and check that every case has a prediction")
    add_common_arguments(p)
    return p


def export_main(argv=None) -> None:
    cli(_exporter_parser(), lambda a: export(a.input, a.output, a.convention, a.raw, a.overwrite,
                                             a.num_processes), argv)
