"""BUSI (breast ultrasound, lesion segmentation) to an nnU-Net 2D PNG dataset.

Two input layouts are read:
- the public release: `Dataset_BUSI_with_GT/<class>/<class> (n).png` with its mask `<class> (n)_mask.png`;
  further lesions of the same image, `<class> (n)_mask_1.png`, `_mask_2.png`, ..., are merged into it
  (logical OR). Classes: benign, malignant, normal (normal images have empty masks). -i may be the folder
  holding Dataset_BUSI_with_GT or that folder itself;
- images/ + masks/: `images/busi_<class>_<nnn>.png` with `masks/busi_<class>_<nnn>.png` (0/255).
Each image becomes the case `busi_<class>_<nnn>` (n zero-padded to three digits), so the class can be read
from the case id: `imagesTr/<case>_0000.png` (one grayscale channel) and `labelsTr/<case>.png` (0 background,
1 lesion; a mask pixel is lesion where its value is > 127, in any colour channel).
The release stores its grayscale images as RGB PNGs: an image whose three channels are equal keeps one of
them exactly; one whose channels differ becomes ITU-R 601-2 luma (0.299 R + 0.587 G + 0.114 B); the
converter says how many images took which way, and case_info.json records it per case.
Normalisation (--normalization): rgb_to_0_1 (default) names the channel so that nnU-Net scales the 8-bit
values to 0..1, the same convention as the RGB PH2 dataset, which is the input scale ImageNet-pretrained
encoders are used with; zscore gives nnU-Net's per-image z-scoring instead.
BUSI has no patient ids: by default each image is its own group in the seeded cross-validation folds of
splits_final.json; with --groups FILE (CSV rows `name,group` or a JSON object {name: group}; names are case
ids or the input's image file names, with or without .png) the images of one group never straddle a fold.
case_info.json lists each case's class, group, source files, size, lesion pixel count and image conversion.
"""
from __future__ import annotations

import argparse
import os
import re

from ._common import converter_parser
from ._common import (ConversionError, DatasetOptions, add_dataset_arguments, build_dataset, cli, dataset_options,
                      files_with_suffix, require_dir, visible_entries, warn)
from ._png2d import (CASE_INFO, FILE_ENDING, LABELS, case_info, case_result, grouped_splits, groups_for_cases,
                     images_masks_cases, read_gray, read_masks, report_conversions, warn_empty_masks, write_case)
from .dataset_ids import BUSI

DEFAULT_ID, DEFAULT_NAME = BUSI
RELEASE_FOLDER = "Dataset_BUSI_with_GT"
CLASSES = ("benign", "malignant", "normal")
NORMALIZATIONS = ("rgb_to_0_1", "zscore")
RELEASE_RE = re.compile(r"(?P<cls>[a-z]+) \((?P<n>\d+)\)(?P<mask>_mask(?:_(?P<k>\d+))?)?\.png", re.IGNORECASE)
DEV_RE = re.compile(r"busi_(?P<cls>benign|malignant|normal)_(?P<n>\d+)")
LAYOUT_HELP = (f"expected {RELEASE_FOLDER}/<class>/<class> (n).png + '<class> (n)_mask.png' (the public release; "
               f"classes {', '.join(CLASSES)}) or images/busi_<class>_<nnn>.png + masks/busi_<class>_<nnn>.png")


def case_id(cls: str, n: int) -> str:
    return f"busi_{cls}_{n:03d}"


def class_of(case: str) -> str:
    return case.split("_")[1]


def _release_class(folder: str, cls: str, cases: dict[str, dict], ignored: list[str]) -> None:
    images: dict[str, str] = {}
    masks: dict[str, list[tuple[int, str]]] = {}
    for name in files_with_suffix(folder, ".png"):
        m = RELEASE_RE.fullmatch(name)
        if m is None or m["cls"].lower() != cls:
            ignored.append(os.path.join(folder, name))
            continue
        case = case_id(cls, int(m["n"]))
        if m["mask"] is None:
            if case in images or case in cases:
                raise ConversionError(f"duplicate case id {case}: {images.get(case) or cases[case]['image']} and "
                                      f"{os.path.join(folder, name)}")
            images[case] = os.path.join(folder, name)
        else:
            masks.setdefault(case, []).append((int(m["k"]) + 1 if m["k"] else 0, os.path.join(folder, name)))
    for case, found in sorted(masks.items()):
        if case not in images:
            raise ConversionError(f"mask {found[0][1]} has no image (expected {cls} (n).png next to it)")
    for case, image in sorted(images.items()):
        found = sorted(masks.get(case, []))
        if not found or found[0][0] != 0:
            raise ConversionError(f"missing mask {image[:-4]}_mask.png for image {image}")
        if len({k for k, _ in found}) != len(found):
            raise ConversionError(f"{image}: two masks with the same number, {[p for _, p in found]}")
        cases[case] = {"image": image, "masks": [p for _, p in found], "class": cls}


def _release_cases(base: str) -> dict[str, dict]:
    folders = {n.lower(): os.path.join(base, n) for n in visible_entries(base) if os.path.isdir(os.path.join(base, n))}
    present = [c for c in CLASSES if c in folders]
    if not present:
        raise ConversionError(f"{base} holds no class folder ({', '.join(CLASSES)}); {LAYOUT_HELP}")
    missing = [c for c in CLASSES if c not in folders]
    if missing:
        warn(f"no {', '.join(missing)} folder in {base}: converting {', '.join(present)} only")
    cases: dict[str, dict] = {}
    ignored: list[str] = []
    for cls in present:
        before = len(cases)
        _release_class(folders[cls], cls, cases, ignored)
        if len(cases) == before:
            raise ConversionError(f"no images in {folders[cls]} (expected '{cls} (n).png' with "
                                  f"'{cls} (n)_mask.png')")
    if ignored:
        warn(f"ignored {len(ignored)} file(s) that are not named like BUSI images or masks, e.g. {ignored[0]}")
    return cases


def _dev_case(name: str):
    m = DEV_RE.fullmatch(name)
    return None if m is None else (case_id(m["cls"], int(m["n"])), {"class": m["cls"]})


def _images_masks_cases(root: str) -> dict[str, dict]:
    return images_masks_cases(root, "BUSI", _dev_case, f"images/busi_<class>_<nnn>.png with class {', '.join(CLASSES)}")


def find_input(root: str) -> tuple[str, str, dict[str, dict]]:
    """(layout, input folder, case -> {"image": path, "masks": [paths], "class": str})."""
    require_dir(root, "BUSI folder")
    if os.path.isdir(os.path.join(root, "images")):
        return "images_masks", root, _images_masks_cases(root)
    if os.path.isdir(os.path.join(root, RELEASE_FOLDER)):
        return "release", os.path.join(root, RELEASE_FOLDER), _release_cases(os.path.join(root, RELEASE_FOLDER))
    if any(n.lower() in CLASSES for n in visible_entries(root)):
        return "release", root, _release_cases(root)
    raise ConversionError(f"{root} holds no BUSI data: {LAYOUT_HELP}")


def _convert_case(out_dir: str, case: str, image_path: str, mask_paths: list[str]) -> dict:
    gray, how = read_gray(image_path)
    lesion = read_masks(mask_paths, image_path, gray.shape)
    write_case(out_dir, case, gray, lesion)
    return case_result(case, gray, lesion, how)


def _aliases(cases: dict[str, dict]) -> dict[str, list[str]]:
    """Names a groups file may use for a case: the case id, the image's file name, with or without .png."""
    return {case: list(dict.fromkeys([case, f"{case}.png", os.path.basename(c["image"]),
                                      os.path.basename(c["image"])[:-4]])) for case, c in sorted(cases.items())}


def convert(input_dir: str, opts: DatasetOptions, n_folds: int = 5, groups_file: str | None = None,
            normalization: str = "rgb_to_0_1") -> str:
    if normalization not in NORMALIZATIONS:
        raise ConversionError(f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
    layout, root, cases = find_input(input_dir)
    groups = groups_for_cases(groups_file, _aliases(cases)) if groups_file else {c: c for c in cases}
    splits = grouped_splits(groups, n_folds)
    counts = {cls: sum(c["class"] == cls for c in cases.values()) for cls in CLASSES}
    dataset_json = dict(channel_names={0: normalization}, channel_meaning={0: "ultrasound (8-bit grayscale)"},
                        labels=dict(LABELS), file_ending=FILE_ENDING, dataset_name=opts.folder_name,
                        overwrite_image_reader_writer="NaturalImage2DIO",
                        reference="https://doi.org/10.1016/j.dib.2019.104863",
                        license="CC BY 4.0; cite Al-Dhabyani et al., Dataset of breast ultrasound images, Data in "
                                "Brief 28, 2020",
                        description=f"BUSI breast ultrasound ({counts['benign']} benign, {counts['malignant']} "
                                    f"malignant, {counts['normal']} normal images; the class is in the case id "
                                    f"busi_<class>_<nnn>), one grayscale channel normalised as {normalization}, "
                                    f"lesion masks (1 lesion; extra lesion masks merged)")

    def sidecar(results: list[dict]) -> dict:
        report_conversions(results)
        warn_empty_masks(results, lambda case: class_of(case) == "normal")
        lesions_in_normal = [r["case"] for r in results if r["lesion_pixels"] and class_of(r["case"]) == "normal"]
        if lesions_in_normal:
            warn(f"{len(lesions_in_normal)} normal image(s) have a non-empty mask, e.g. {lesions_in_normal[:3]}")
        records = {c: {**v, "group": groups[c]} for c, v in cases.items()}
        return case_info("BUSI", layout, root, normalization, records, results)

    jobs = [(case, c["image"], c["masks"]) for case, c in sorted(cases.items())]
    return build_dataset(opts, _convert_case, jobs, dataset_json, splits, (CASE_INFO, sidecar))


def _parser() -> argparse.ArgumentParser:
    p = converter_parser("nnunetv2_xdim_convert_busi", __doc__,
                         f"BUSI folder: the one holding {RELEASE_FOLDER}, {RELEASE_FOLDER} itself, or a folder with "
                        f"images/ and masks/")
    p.add_argument("--groups", metavar="FILE",
                   help="CSV (name,group) or JSON ({name: group}) giving every image a group, e.g. a patient; the "
                        "images of one group are kept in one fold (default: one group per image)")
    p.add_argument("--normalization", choices=NORMALIZATIONS, default="rgb_to_0_1",
                   help="nnU-Net normalisation of the grayscale channel: rgb_to_0_1 scales the 8-bit values to "
                        "0..1 (default, as for RGB images), zscore standardises each image")
    add_dataset_arguments(p, DEFAULT_ID, DEFAULT_NAME)
    return p


def main(argv=None) -> None:
    cli(_parser(), lambda a: convert(a.input, dataset_options(a), a.folds, a.groups, a.normalization), argv)
