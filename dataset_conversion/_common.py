"""Machinery shared by the challenge converters and exporters.

A converter first plans (finds and checks every input file), then builds the dataset in a hidden temporary
folder next to its destination and moves it into place only once everything succeeded: a failed or
interrupted run never leaves a half-written dataset where nnU-Net would find it.
"""
from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

SPLITS_FILE = "splits_final.json"
DEFAULT_NUM_PROCESSES = max(1, min(8, os.cpu_count() or 1))


class ConversionError(Exception):
    """Bad input or a refused action; the message names the file and what was expected."""


# ----------------------------------------------------------------------------------------------- folders


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise ConversionError(f"dataset id must be between 1 and 999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise ConversionError(f"dataset name {name!r} must be letters, digits, '_', '-' or '.' (no spaces)")
    return f"Dataset{dataset_id:03d}_{name}"


def nnunet_root(explicit: str | None, env_var: str) -> str | None:
    path = explicit or os.environ.get(env_var)
    return os.path.abspath(path) if path else None


def _same_id_folders(root: str | None, dataset_id: int) -> list[str]:
    if root is None or not os.path.isdir(root):
        return []
    prefix = f"Dataset{dataset_id:03d}_"
    return sorted(d for d in os.listdir(root) if d.startswith(prefix) and os.path.isdir(os.path.join(root, d)))


def check_dataset_id_free(dataset_id: int, folder_name: str, roots: Sequence[str | None]) -> None:
    """nnU-Net finds a dataset by its id prefix and refuses an id that two dataset names share."""
    for root in roots:
        others = [d for d in _same_id_folders(root, dataset_id) if d != folder_name]
        if others:
            raise ConversionError(
                f"dataset id {dataset_id} is already taken by {os.path.join(root, others[0])}; nnU-Net needs one "
                f"name per id: choose another id with -d or remove that folder")


def resolve_dataset_folder(spec: str, raw_root: str | None = None) -> str:
    """A dataset given as a folder path, a DatasetXXX_Name, or a bare id, looked up in $nnUNet_raw."""
    if os.path.isdir(spec):
        return os.path.abspath(spec)
    raw_root = nnunet_root(raw_root, "nnUNet_raw")
    if raw_root is None:
        raise ConversionError(f"cannot find dataset {spec!r}: it is not a folder and $nnUNet_raw is not set")
    if spec.isdigit():
        found = _same_id_folders(raw_root, int(spec))
        if len(found) != 1:
            raise ConversionError(f"expected exactly one Dataset{int(spec):03d}_* folder in {raw_root}, found "
                                  f"{found or 'none'}")
        return os.path.join(raw_root, found[0])
    path = os.path.join(raw_root, spec)
    if not os.path.isdir(path):
        raise ConversionError(f"dataset folder {path} does not exist")
    return path


def require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise ConversionError(f"{what} {path} does not exist or is not a folder")
    return path


def visible_entries(folder: str) -> list[str]:
    """Names in a folder without hidden entries (macOS '._*' resource forks ship in some challenge zips)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and n != "__MACOSX")


def files_with_suffix(folder: str, suffix: str) -> list[str]:
    """File names ending in suffix (case-insensitive), in plain file-name order."""
    return [n for n in visible_entries(folder)
            if n.lower().endswith(suffix) and os.path.isfile(os.path.join(folder, n))]


@contextmanager
def staged_folder(target: str, overwrite: bool) -> Iterator[str]:
    """Yield an empty hidden folder next to target; it replaces target only if the block succeeds."""
    if os.path.exists(target) and not overwrite:
        raise ConversionError(f"{target} already exists; pass --overwrite to replace it")
    parent, base = os.path.split(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    leftovers = glob.glob(os.path.join(parent, f".{base}.partial-*"))
    if leftovers:
        print(f"note: folder(s) left by an interrupted run, safe to delete: {', '.join(leftovers)}")
    tmp = tempfile.mkdtemp(prefix=f".{base}.partial-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(target):
        old = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old)
    else:
        os.rename(tmp, target)


@contextmanager
def staged_files(out_dir: str, planned: Sequence[str], overwrite: bool) -> Iterator[str]:
    """Exporters write into a hidden folder inside out_dir; its files move into place only at the end.

    out_dir may already hold other results (the CHAOS CT and MR exports share one submission tree), so
    files, not the folder, are replaced; planned lists the relative paths the export will write.
    """
    existing = [p for p in planned if os.path.exists(os.path.join(out_dir, p))]
    if existing and not overwrite:
        raise ConversionError(f"{len(existing)} output file(s) already exist, e.g. "
                              f"{os.path.join(out_dir, existing[0])}; pass --overwrite to replace them")
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export.partial-", dir=out_dir)
    try:
        yield tmp
        for folder, _, names in os.walk(tmp):
            for name in names:
                rel = os.path.relpath(os.path.join(folder, name), tmp)
                os.makedirs(os.path.dirname(os.path.join(out_dir, rel)), exist_ok=True)
                os.replace(os.path.join(folder, name), os.path.join(out_dir, rel))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: str, obj) -> None:
    tmp = f"{path}.partial-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def load_json(path: str, what: str):
    if not os.path.isfile(path):
        raise ConversionError(f"{what} {path} not found")
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------ splits


def patient_level_folds(patients: Sequence[str], n_folds: int, seed: int = 12345) -> list[tuple[list, list]]:
    """nnU-Net's own seeded k-fold procedure, applied to patients instead of cases: (train, val) patients."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    patients = sorted(patients)
    if n_folds < 2 or len(patients) < n_folds:
        raise ConversionError(f"cannot make {n_folds} patient-grouped folds from {len(patients)} patient(s): "
                              f"need at least 2 folds and one patient per fold (see --folds)")
    return [([str(p) for p in s["train"]], [str(p) for p in s["val"]])
            for s in generate_crossval_split(patients, seed=seed, n_splits=n_folds)]


def patient_folds(cases_by_patient: dict[str, list[str]], n_folds: int, seed: int = 12345) -> list[dict]:
    return [folds_of_patients(t, v, cases_by_patient)
            for t, v in patient_level_folds(list(cases_by_patient), n_folds, seed)]


def folds_of_patients(train: Sequence[str], val: Sequence[str], cases_by_patient: dict[str, list[str]],
                      train_only: dict[str, list[str]] | None = None) -> dict:
    """Cases of the train and val patients; train_only cases (extra training frames) join the train side."""
    extra = train_only or {}
    return {"train": sorted(c for p in train for c in cases_by_patient[p] + extra.get(p, [])),
            "val": sorted(c for p in val for c in cases_by_patient[p])}


def check_splits(splits: list[dict], training_cases: Sequence[str]) -> None:
    known = set(training_cases)
    for i, fold in enumerate(splits):
        unknown = (set(fold["train"]) | set(fold["val"])) - known
        if unknown or set(fold["train"]) & set(fold["val"]) or not fold["train"] or not fold["val"]:
            raise ConversionError(f"fold {i} of the splits is inconsistent (empty side, overlap, or cases "
                                  f"that are not training cases: {sorted(unknown)[:3]})")


# ------------------------------------------------------------------------------------------------- build


@dataclass
class DatasetOptions:
    raw_root: str
    preprocessed_root: str | None
    dataset_id: int
    name: str
    overwrite: bool
    num_processes: int

    @property
    def folder_name(self) -> str:
        return dataset_folder_name(self.dataset_id, self.name)

    @property
    def target(self) -> str:
        return os.path.join(self.raw_root, self.folder_name)

    @property
    def preprocessed_splits(self) -> str | None:
        if self.preprocessed_root is None:
            return None
        return os.path.join(self.preprocessed_root, self.folder_name, SPLITS_FILE)


def converter_parser(prog: str, doc: str, input_help: str, multiple_inputs: bool = False) -> argparse.ArgumentParser:
    """A converter's parser with its -i option (the dataset options are added last, by add_dataset_arguments)."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--input", required=True, help=input_help, **({"nargs": "+"} if multiple_inputs else {}))
    return p


def exporter_parser(prog: str, description: str, output_help: str = "submission folder to write"
                    ) -> argparse.ArgumentParser:
    """An exporter's parser: -i nnUNetv2_predict's output, -o the submission folder."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("-i", "--input", required=True, help="folder with nnU-Net's .nii.gz predictions")
    p.add_argument("-o", "--output", required=True, help=output_help)
    return p


def add_dataset_arguments(parser: argparse.ArgumentParser, default_id: int | None, default_name: str | None,
                          defaults: str | None = None, folds: int | None = 5) -> None:
    defaults = defaults or f"{default_id} {default_name}"
    parser.add_argument("-o", "--output-dir", help="nnU-Net raw folder to write DatasetXXX_Name into "
                                                   "(default: $nnUNet_raw)")
    parser.add_argument("-d", "--dataset-id", type=int, default=default_id,
                        help=f"nnU-Net dataset id (default: {defaults})")
    parser.add_argument("--name", default=default_name, help=f"dataset name (default: {defaults})")
    parser.add_argument("--preprocessed-dir",
                        help="nnU-Net preprocessed folder that receives DatasetXXX_Name/splits_final.json "
                             "(default: $nnUNet_preprocessed; a copy is always kept in the raw dataset, from "
                             "which nnU-Net's planning copies it)")
    if folds is not None:
        parser.add_argument("--folds", type=int, default=folds,
                            help=f"number of patient-grouped cross-validation folds (default: {folds})")
    add_common_arguments(parser)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-np", "--num-processes", type=int, default=DEFAULT_NUM_PROCESSES,
                        help=f"parallel worker processes (default: {DEFAULT_NUM_PROCESSES})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output")


def dataset_options(args: argparse.Namespace) -> DatasetOptions:
    raw_root = nnunet_root(args.output_dir, "nnUNet_raw")
    if raw_root is None:
        raise ConversionError("no output folder: pass -o/--output-dir or set $nnUNet_raw")
    return DatasetOptions(raw_root=raw_root, preprocessed_root=nnunet_root(args.preprocessed_dir,
                                                                           "nnUNet_preprocessed"),
                          dataset_id=args.dataset_id, name=args.name,
                          overwrite=args.overwrite, num_processes=args.num_processes)


def _star(packed):
    func, args = packed
    return func(*args)


def run_parallel(func: Callable, jobs: Sequence[tuple], num_processes: int, desc: str) -> list:
    """func(*job) for every job, results in job order, with a progress bar; spawn keeps ITK threads safe."""
    if num_processes <= 1 or len(jobs) <= 1:
        return [func(*job) for job in tqdm(jobs, desc=desc)]
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
        return list(tqdm(pool.imap(_star, [(func, job) for job in jobs]), total=len(jobs), desc=desc))


def _check_preprocessed_splits(opts: DatasetOptions, splits: list[dict]) -> None:
    """Planning asserts that an existing preprocessed splits file matches the raw one: never leave a mismatch."""
    path = opts.preprocessed_splits
    if path and os.path.isfile(path) and not opts.overwrite and load_json(path, "splits file") != splits:
        raise ConversionError(f"{path} exists with different folds; pass --overwrite to replace it")


def build_dataset(opts: DatasetOptions, worker: Callable, jobs: Sequence[tuple], dataset_json: dict,
                  splits: list[dict] | Callable[[list], list[dict]],
                  sidecar: tuple[str, Callable[[list], object]] | None = None) -> str:
    """Run worker(temp_dataset_folder, *job) for every job, then write dataset.json, splits and sidecar.

    worker writes imagesTr/labelsTr/imagesTs/labelsTs files; splits may depend on the workers' results
    (a function of them); sidecar is (file name, results -> JSON).
    The splits go into the raw dataset (nnU-Net's planner copies them from there) and, when the
    preprocessed folder is known, straight into it.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    check_dataset_id_free(opts.dataset_id, opts.folder_name, [opts.raw_root, opts.preprocessed_root])
    if not callable(splits):
        _check_preprocessed_splits(opts, splits)  # fail before the long part when we can
    with staged_folder(opts.target, opts.overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            os.makedirs(os.path.join(tmp, sub))
        results = run_parallel(worker, [(tmp, *job) for job in jobs], opts.num_processes,
                               f"{opts.folder_name}")
        for sub in ("imagesTs", "labelsTs"):
            if not os.listdir(os.path.join(tmp, sub)):
                os.rmdir(os.path.join(tmp, sub))
        ending = dataset_json["file_ending"]
        training = [n[:-len(ending)] for n in files_with_suffix(os.path.join(tmp, "labelsTr"), ending)]
        if callable(splits):
            splits = splits(results)
        check_splits(splits, training)
        _check_preprocessed_splits(opts, splits)
        num_training = len(training)
        generate_dataset_json(tmp, num_training_cases=num_training,
                              **{"converted_by": f"nnunetv2-xdim ({worker.__module__})", **dataset_json})
        write_json_atomic(os.path.join(tmp, SPLITS_FILE), splits)
        if sidecar is not None:
            write_json_atomic(os.path.join(tmp, sidecar[0]), sidecar[1](results))
    if opts.preprocessed_splits:
        os.makedirs(os.path.dirname(opts.preprocessed_splits), exist_ok=True)
        write_json_atomic(opts.preprocessed_splits, splits)
        print(f"wrote {opts.preprocessed_splits}")
    else:
        print(f"note: $nnUNet_preprocessed is not set; nnUNetv2_plan_and_preprocess will copy "
              f"{os.path.join(opts.target, SPLITS_FILE)} into the preprocessed dataset")
    print(f"wrote {opts.target}: {num_training} training case(s), {len(splits)} patient-grouped fold(s)")
    return opts.target


# ------------------------------------------------------------------------------------------------ checks


def check_labels(values: np.ndarray, allowed: Sequence[int], path: str, meaning: str = "") -> None:
    found = np.unique(values)
    bad = found[~np.isin(found, np.asarray(allowed))]
    if bad.size:
        raise ConversionError(f"{path}: unexpected label value(s) {bad.tolist()}; expected only "
                              f"{sorted(allowed)}{meaning}")


def prediction_files(pred_dir: str, file_ending: str = ".nii.gz") -> list[str]:
    require_dir(pred_dir, "predictions folder")
    names = files_with_suffix(pred_dir, file_ending)
    if not names:
        raise ConversionError(f"no {file_ending} predictions in {pred_dir} (expected nnUNetv2_predict output)")
    return names


def cli(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], object],
        argv: Sequence[str] | None) -> None:
    args = parser.parse_args(argv)
    try:
        run(args)
    except ConversionError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
