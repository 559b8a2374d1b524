"""PH2 (dermoscopy, skin lesion segmentation) to an nnU-Net 2D PNG dataset.

Two input layouts are read:
- the public release: `PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp` with the expert mask
  `IMDxxx_lesion/IMDxxx_lesion.bmp`; -i may be the folder holding `PH2 Dataset images` (also under
  `PH2Dataset/`, as in the release zip) or that folder itself. Other files (PH2_dataset.txt/.xlsx, the
  IMDxxx_roi/ colour-class masks) are ignored;
- images/ + masks/: `images/IMDxxx.png` (RGB) with `masks/IMDxxx.png` (0/255).
Each image becomes the case IMDxxx: `imagesTr/IMDxxx_0000.png`, one RGB PNG that nnU-Net's natural-image
reader (NaturalImage2DIO) reads as the three channels R, G, B, in that order; dataset.json names all three
channels "rgb_to_0_1", which selects nnU-Net's RGBTo01Normalization (the 8-bit values divided by 255).
`labelsTr/IMDxxx.png` holds 0 background / 1 lesion (a mask pixel is lesion where its value is > 127).
PH2 has one image per patient, so the seeded cross-validation folds in splits_final.json group one image
each. case_info.json lists each case's source files, size and lesion pixel count.
"""
from __future__ import annotations

import argparse
import os
import re

from ._common import converter_parser
from ._common import (ConversionError, DatasetOptions, add_dataset_arguments, build_dataset, cli, dataset_options,
                      require_dir, visible_entries)
from ._png2d import (CASE_INFO, FILE_ENDING, LABELS, case_info, case_result, grouped_splits, images_masks_cases,
                     read_masks, read_rgb, report_conversions, warn_empty_masks, write_case)
from .dataset_ids import PH2

DEFAULT_ID, DEFAULT_NAME = PH2
RELEASE_FOLDER = "PH2 Dataset images"
CASE_RE = re.compile(r"IMD\d+")
NORMALIZATION = "rgb_to_0_1"
LAYOUT_HELP = (f"expected '{RELEASE_FOLDER}/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp' (the public release, "
               f"possibly under PH2Dataset/) or images/IMDxxx.png + masks/IMDxxx.png")


def _find_file(folder: str, stem: str, what: str) -> str:
    """folder/stem.bmp (or .png), the extension in any case."""
    if os.path.isdir(folder):
        for name in visible_entries(folder):
            base, ext = os.path.splitext(name)
            if base.lower() == stem.lower() and ext.lower() in (".bmp", ".png"):
                return os.path.join(folder, name)
    raise ConversionError(f"missing {what} {os.path.join(folder, stem)}.bmp (expected in the PH2 release layout, "
                          f"{LAYOUT_HELP})")


def _release_cases(base: str) -> dict[str, dict]:
    folders = [n for n in visible_entries(base) if CASE_RE.fullmatch(n) and os.path.isdir(os.path.join(base, n))]
    if not folders:
        raise ConversionError(f"no IMDxxx case folders in {base} ({LAYOUT_HELP})")
    cases = {}
    for case in folders:
        folder = os.path.join(base, case)
        cases[case] = {"image": _find_file(os.path.join(folder, f"{case}_Dermoscopic_Image"), case, "image"),
                       "masks": [_find_file(os.path.join(folder, f"{case}_lesion"), f"{case}_lesion", "mask")]}
    return cases


def _images_masks_cases(root: str) -> dict[str, dict]:
    return images_masks_cases(root, "PH2", lambda name: (name, {}) if CASE_RE.fullmatch(name) else None,
                              "images/IMDxxx.png + masks/IMDxxx.png")


def find_input(root: str) -> tuple[str, str, dict[str, dict]]:
    """(layout, input folder, case -> {"image": path, "masks": [path]})."""
    require_dir(root, "PH2 folder")
    if os.path.isdir(os.path.join(root, "images")):
        return "images_masks", root, _images_masks_cases(root)
    for base in (os.path.join(root, RELEASE_FOLDER), os.path.join(root, "PH2Dataset", RELEASE_FOLDER)):
        if os.path.isdir(base):
            return "release", base, _release_cases(base)
    if any(CASE_RE.fullmatch(n) for n in visible_entries(root)):
        return "release", root, _release_cases(root)
    raise ConversionError(f"{root} holds no PH2 data: {LAYOUT_HELP}")


def _convert_case(out_dir: str, case: str, image_path: str, mask_paths: list[str]) -> dict:
    rgb, how = read_rgb(image_path)
    lesion = read_masks(mask_paths, image_path, rgb.shape[:2])
    write_case(out_dir, case, rgb, lesion)
    return case_result(case, rgb, lesion, how)


def convert(input_dir: str, opts: DatasetOptions, n_folds: int = 5) -> str:
    layout, root, cases = find_input(input_dir)
    dataset_json = dict(channel_names={0: NORMALIZATION, 1: NORMALIZATION, 2: NORMALIZATION},
                        channel_meaning={0: "R", 1: "G", 2: "B"}, labels=dict(LABELS), file_ending=FILE_ENDING,
                        dataset_name=opts.folder_name, overwrite_image_reader_writer="NaturalImage2DIO",
                        reference="https://www.fc.up.pt/addi/ph2%20database.html",
                        license="research use; cite Mendonca et al., PH2 - A dermoscopic image database for "
                                "research and benchmarking, IEEE EMBC 2013",
                        description="PH2 dermoscopy images (one RGB PNG per case: channels R, G, B, each named "
                                    "rgb_to_0_1 so that nnU-Net scales the 8-bit values to 0..1) with expert lesion "
                                    "masks (1 lesion)")

    def sidecar(results: list[dict]) -> dict:
        report_conversions(results)
        warn_empty_masks(results)
        return case_info("PH2", layout, root, NORMALIZATION, {c: {**v, "group": c} for c, v in cases.items()},
                         results)

    jobs = [(case, c["image"], c["masks"]) for case, c in sorted(cases.items())]
    return build_dataset(opts, _convert_case, jobs, dataset_json, grouped_splits({c: c for c in cases}, n_folds),
                         (CASE_INFO, sidecar))


def _parser() -> argparse.ArgumentParser:
    p = converter_parser("nnunetv2_xdim_convert_ph2", __doc__,
                         f"PH2 folder: the one holding '{RELEASE_FOLDER}' (or PH2Dataset/), '{RELEASE_FOLDER}' "
                        f"itself, or a folder with images/ and masks/")
    add_dataset_arguments(p, DEFAULT_ID, DEFAULT_NAME)
    return p


def main(argv=None) -> None:
    cli(_parser(), lambda a: convert(a.input, dataset_options(a), a.folds), argv)
