"""Shared parts of the 2D natural-image converters (PH2, BUSI): PNG in and out, masks, groups, case sidecar.

Datasets are written for nnU-Net's NaturalImage2DIO (`file_ending` ".png"): one PNG per case in imagesTr
(`<case>_0000.png`; an RGB PNG is read as three channels R, G, B in that order) and its label in labelsTr
(`<case>.png`, 8-bit, 0 background / 1 lesion). Images are read with Pillow and must be 8-bit.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from ._common import ConversionError, files_with_suffix, patient_folds, require_dir, warn

FILE_ENDING = ".png"
CASE_INFO = "case_info.json"
LABELS = {"background": 0, "lesion": 1}
MASK_RULE = "a mask pixel is lesion where its value is > 127 (any colour channel); masks stored as 0/1 are taken as is"
EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


def _open(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ConversionError(f"{path}: cannot read it as an image ({e})") from None
    if img.mode not in EIGHT_BIT_MODES:
        raise ConversionError(f"{path}: pixel mode {img.mode!r} is not an 8-bit image (expected 8-bit grayscale or "
                              f"RGB, as in the public release)")
    if getattr(img, "n_frames", 1) > 1:
        raise ConversionError(f"{path}: holds {img.n_frames} frames; expected a single 2D image")
    return img


def _check_size(path: str, size: tuple[int, int], ref_path: str, ref_size: tuple[int, int]) -> None:
    if size != ref_size:
        raise ConversionError(f"{path}: size {size[0]}x{size[1]} (W x H) differs from its image {ref_path} "
                              f"({ref_size[0]}x{ref_size[1]}); image and mask must match pixel for pixel (re-export "
                              f"the pair from the original release)")


def read_rgb(path: str) -> tuple[np.ndarray, str]:
    """H x W x 3 uint8 (R, G, B) and how it was obtained: "rgb", "rgb_alpha_dropped" or "gray_replicated"."""
    img = _open(path)
    if img.mode in ("1", "L", "LA"):
        return np.asarray(img.convert("RGB")), "gray_replicated"
    if img.mode in ("RGBA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"))[..., :3].copy(), "rgb_alpha_dropped"
    return np.asarray(img.convert("RGB")), "rgb"


def read_gray(path: str) -> tuple[np.ndarray, str]:
    """H x W uint8 and how: "gray" (stored as one channel), "rgb_equal_channels" (RGB with R == G == B: one of
    them, exactly) or "luma" (RGB with differing channels: Pillow's ITU-R 601-2 luma, L = 0.299 R + 0.587 G +
    0.114 B). An alpha channel is ignored."""
    from PIL import Image

    img = _open(path)
    if img.mode in ("1", "L", "LA"):
        return np.asarray(img.convert("L")), "gray"
    rgb = np.asarray(img.convert("RGBA"))[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].copy(), "rgb_equal_channels"
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("L")), "luma"


def read_masks(paths: list[str], image_path: str, image_shape: tuple[int, int]) -> np.ndarray:
    """The union (logical OR) of the masks, as an H x W bool array; each must have the image's size."""
    union = np.zeros(image_shape, bool)
    for path in paths:
        img = _open(path)
        _check_size(path, img.size, image_path, (image_shape[1], image_shape[0]))
        arr = np.asarray(img.convert("RGBA") if img.mode in ("P", "PA") else img)
        if arr.ndim == 3:
            arr = arr[..., :1] if img.mode == "LA" else arr[..., :3]
            arr = arr.max(-1)
        arr = arr.astype(np.uint8)
        union |= (arr == 1) if arr.max() <= 1 else (arr > 127)
    return union


def write_case(out_dir: str, case: str, image: np.ndarray, lesion: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image, "RGB" if image.ndim == 3 else "L").save(
        os.path.join(out_dir, "imagesTr", f"{case}_0000{FILE_ENDING}"))
    Image.fromarray(lesion.astype(np.uint8), "L").save(os.path.join(out_dir, "labelsTr", f"{case}{FILE_ENDING}"))


def case_result(case: str, image: np.ndarray, lesion: np.ndarray, how: str) -> dict:
    return {"case": case, "size": [int(image.shape[1]), int(image.shape[0])],
            "lesion_pixels": int(lesion.sum()), "image_conversion": how}


# ------------------------------------------------------------------------------------------------ groups


def read_groups_file(path: str) -> dict[str, str]:
    """name -> group id from a JSON object or a two-column CSV (name,group; an optional header row whose
    second column is 'group')."""
    if not os.path.isfile(path):
        raise ConversionError(f"groups file {path} not found")
    pairs: list[tuple[str, str, str]] = []  # name, group, where
    if path.lower().endswith(".json"):
        try:
            with open(path) as f:
                obj = json.load(f)
        except json.JSONDecodeError as e:
            raise ConversionError(f"groups file {path} is not valid JSON ({e})") from None
        if not isinstance(obj, dict) or not obj:
            raise ConversionError(f"groups file {path}: expected a non-empty JSON object {{case or image name: "
                                  f"group id}}")
        pairs = [(str(k).strip(), str(v).strip(), f"key {k!r}") for k, v in obj.items()]
    else:
        with open(path, newline="") as f:
            rows = [(i + 1, r) for i, r in enumerate(csv.reader(f)) if any(c.strip() for c in r)]
        if rows and len(rows[0][1]) == 2 and rows[0][1][1].strip().lower() == "group":
            rows = rows[1:]
        for line, row in rows:
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ConversionError(f"groups file {path}, line {line}: expected two columns 'name,group', got "
                                      f"{row!r} (use a .json file for a JSON object)")
            pairs.append((row[0].strip(), row[1].strip(), f"line {line}"))
        if not pairs:
            raise ConversionError(f"groups file {path} lists no images (expected rows 'name,group')")
    groups: dict[str, str] = {}
    for name, group, where in pairs:
        if not group:
            raise ConversionError(f"groups file {path}, {where}: empty group id for {name!r}")
        if groups.get(name, group) != group:
            raise ConversionError(f"groups file {path}, {where}: {name!r} is given two groups, {groups[name]!r} and "
                                  f"{group!r}")
        groups[name] = group
    return groups


def groups_for_cases(path: str, aliases: dict[str, list[str]]) -> dict[str, str]:
    """case -> group from a groups file whose names may be any of a case's aliases (case id, file names)."""
    by_name = {a: case for case, names in aliases.items() for a in names}
    found: dict[str, str] = {}
    unknown = []
    for name, group in read_groups_file(path).items():
        case = by_name.get(name)
        if case is None:
            unknown.append(name)
        elif found.setdefault(case, group) != group:
            raise ConversionError(f"groups file {path} gives case {case} two groups, {found[case]!r} and "
                                  f"{group!r} (under different names)")
    if unknown:
        raise ConversionError(f"groups file {path} names {len(unknown)} image(s) that are not in the input, e.g. "
                              f"{unknown[:3]} (use case ids like {next(iter(aliases))!r} or the input's file names)")
    missing = [c for c in aliases if c not in found]
    if missing:
        raise ConversionError(f"groups file {path} gives no group for {len(missing)} of {len(aliases)} image(s), "
                              f"e.g. {missing[:3]}: every image needs a group (one line per image)")
    return found


def grouped_splits(groups: dict[str, str], n_folds: int) -> list[dict]:
    """nnU-Net's seeded k-fold over groups: the images of one group are never on both sides of a fold."""
    cases_by_group: dict[str, list[str]] = {}
    for case, group in sorted(groups.items()):
        cases_by_group.setdefault(group, []).append(case)
    return patient_folds(cases_by_group, n_folds)


# ------------------------------------------------------------------------------------------------ sidecar


def case_info(dataset: str, layout: str, root: str, normalization: str, cases: dict[str, dict],
              results: list[dict]) -> dict:
    """The sidecar: per case its source files (relative to the input folder), group, class, size, lesion pixels."""
    out = {}
    for r in results:
        record = dict(cases[r["case"]])
        record["image"] = os.path.relpath(record["image"], root)
        record["masks"] = [os.path.relpath(m, root) for m in record["masks"]]
        out[r["case"]] = {**record, **{k: v for k, v in r.items() if k != "case"}}
    return {"dataset": dataset, "input_layout": layout, "input": root, "normalization": normalization,
            "labels": dict(LABELS), "mask_rule": MASK_RULE, "cases": out}


def report_conversions(results: list[dict]) -> None:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["image_conversion"]] = counts.get(r["image_conversion"], 0) + 1
    notes = {"rgb_equal_channels": "stored as RGB with equal channels: took one channel",
             "luma": "stored as RGB with differing channels: converted to ITU-R 601-2 luma",
             "gray_replicated": "stored as grayscale: replicated into R, G and B",
             "rgb_alpha_dropped": "stored with an alpha channel: dropped it"}
    for how, n in sorted(counts.items()):
        if how in notes:
            print(f"note: {n} image(s) {notes[how]}")


def warn_empty_masks(results: list[dict], expected_empty=lambda case: False) -> None:
    empty = [r["case"] for r in results if r["lesion_pixels"] == 0 and not expected_empty(r["case"])]
    if empty:
        warn(f"{len(empty)} image(s) have an empty lesion mask, e.g. {empty[:3]}")


def images_masks_cases(root: str, dataset: str, case_of, expected: str) -> dict[str, dict]:
    """The images/ + masks/ layout: every images/<name>.png with masks/<name>.png of the same name.

    `case_of(name)` (name without .png) gives (case id, extra fields) or None for a name that does not belong;
    `expected` says in error messages what the names should look like."""
    images, masks = os.path.join(root, "images"), os.path.join(root, "masks")
    require_dir(masks, "mask folder (next to images/)")
    names = files_with_suffix(images, ".png")
    if not names:
        raise ConversionError(f"no .png images in {images} (expected {expected})")
    cases = {}
    for name in names:
        parsed = case_of(name[:-4])
        if parsed is None:
            raise ConversionError(f"{os.path.join(images, name)}: not a {dataset} image name (expected {expected})")
        case, extra = parsed
        if case in cases:
            raise ConversionError(f"duplicate case id {case}: {cases[case]['image']} and {os.path.join(images, name)}")
        mask = os.path.join(masks, name)
        if not os.path.isfile(mask):
            raise ConversionError(f"missing mask {mask} for image {os.path.join(images, name)}")
        cases[case] = {"image": os.path.join(images, name), "masks": [mask], **extra}
    orphans = sorted(set(files_with_suffix(masks, ".png")) - set(names))
    if orphans:
        raise ConversionError(f"{len(orphans)} mask(s) in {masks} have no image in {images}, e.g. {orphans[0]}")
    return cases
