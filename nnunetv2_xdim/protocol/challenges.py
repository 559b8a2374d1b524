"""The paper's three challenges as data: their datasets, trainers and nnU-Net configuration, the project's
converter, exporter and evaluation preset, the hooks where one challenge's commands differ from another's, and
what the publications report.

A hook gets the protocol's settings (`s`: inputs, dry_run, ...), and the step hooks also the dataset and a
`comment` function that prints a note among the printed commands (dry runs).
"""
import argparse
import os
import re
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..dataset_conversion.dataset_ids import BRATS2022, CAMUS, CHAOS_CT, CHAOS_MR, DatasetId
from .published import PUBLISHED_BRATS2022, PUBLISHED_CAMUS, PUBLISHED_CHAOS, Published


@dataclass(frozen=True)
class DatasetSpec:
    dataset_id: int
    name: str
    converter_args: Tuple[str, ...] = ()
    label: str = ""  # CT / MR for CHAOS

    @classmethod
    def of(cls, default: DatasetId, converter_args: Sequence[str] = (), label: str = "") -> "DatasetSpec":
        return cls(default.id, default.name, tuple(converter_args), label)

    @property
    def folder(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


Comment = Callable[[str], None]
StepHook = Callable[..., List[str]]  # (s, ds, comment) -> extra arguments


def _no_options(parser: argparse.ArgumentParser) -> None:
    pass


def _no_args(*_) -> List[str]:
    return []


def _all_datasets(args: argparse.Namespace, datasets: List[DatasetSpec]) -> List[DatasetSpec]:
    return datasets


@dataclass(frozen=True)
class Challenge:
    key: str
    title: str
    converter: str  # console commands of the project
    exporter: str
    preset: str  # nnunetv2_xdim_evaluate's --preset
    configuration: str
    trainers: Tuple[str, ...]
    datasets: Tuple[DatasetSpec, ...]
    trainer_note: str
    published: Published
    several_inputs: bool = False  # -i takes several folders
    input_help: str = "the downloaded release (see the converter's --help)"
    # CLI hooks: options of this challenge only, what they add to the converter, which datasets they select
    add_options: Callable[[argparse.ArgumentParser], None] = _no_options
    converter_options: Callable[[argparse.Namespace], List[str]] = _no_args
    select_datasets: Callable[[argparse.Namespace, List[DatasetSpec]], List[DatasetSpec]] = _all_datasets
    # step hooks: what the exporter and the evaluation get beyond the common arguments
    export_options: StepHook = _no_args
    evaluate_options: StepHook = _no_args

    def datasets_with_ids(self, ids: Optional[Sequence[int]]) -> List[DatasetSpec]:
        """The challenge's datasets, under other ids where `ids` (-d/--dataset-ids) gives them."""
        return [replace(d, dataset_id=i) for d, i in zip(self.datasets, ids)] if ids else list(self.datasets)


# ------------------------------------------------------------------------------------------------- hooks


def _export_with_dataset(s, ds: DatasetSpec, comment: Comment) -> List[str]:
    """The converted dataset's sidecar restores the release's file names and geometry."""
    return ["-d", str(ds.dataset_id)]


def _camus_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--half-sequence", action="store_true",
                        help="2023 release: the labelled half-sequence frames as extra training cases")


def _camus_converter_options(args: argparse.Namespace) -> List[str]:
    return ["--half-sequence"] if args.half_sequence else []


def _camus_info(s, ds: DatasetSpec, comment: Comment) -> List[str]:
    """Clinical indices (EDV, ESV, EF) against the release's Info_*.cfg files, where the input has them."""
    root = s.inputs[0]
    for sub in ("training", os.path.join("CAMUS_public", "database_nifti"), "database_nifti"):
        if os.path.isdir(os.path.join(root, sub)):
            return ["--camus-info", os.path.join(root, sub)]
    return ["--camus-info", "INPUT_FOLDER_WITH_Info_cfg_FILES"] if s.dry_run else []


def _chaos_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modalities", nargs="+", choices=("CT", "MR"), default=["CT", "MR"],
                        help="which datasets to run (default: both, exported into one submission folder)")


def _chaos_datasets(args: argparse.Namespace, datasets: List[DatasetSpec]) -> List[DatasetSpec]:
    return [d for d in datasets if d.label in args.modalities]


def _brats_raw_folders(s, ds: DatasetSpec, comment: Comment) -> List[str]:
    """--raw: the input folders whose cases have no seg file (the validation download), for the release's exact
    geometry and a check that every case got a prediction."""
    if s.dry_run and not all(os.path.isdir(i) for i in s.inputs):
        comment("--raw gets those input folders whose cases have no seg file (the validation download)")
        return ["--raw", "VALIDATION_FOLDER"]
    folders = []
    for folder in s.inputs:
        cases = [os.path.join(folder, n) for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n))]
        if cases and not any(re.search(r"[-_]seg\.nii(\.gz)?$", f) for c in cases for f in os.listdir(c)):
            folders.append(folder)
    return ["--raw", *folders] if folders else []


# -------------------------------------------------------------------------------------------- challenges

CHALLENGES: Dict[str, Challenge] = {c.key: c for c in (
    Challenge(
        key="camus", title="CAMUS (2D echocardiography)", converter="nnunetv2_xdim_convert_camus",
        exporter="nnunetv2_xdim_export_camus", preset="camus", configuration="2d",
        trainers=("nnUNetTrainerXDimEfficientNetB0",), datasets=(DatasetSpec.of(CAMUS),),
        trainer_note="Omnia-style 2D with EfficientNet-B0 (Noisy Student weights), as in the paper.",
        published=PUBLISHED_CAMUS, add_options=_camus_options, converter_options=_camus_converter_options,
        export_options=_export_with_dataset, evaluate_options=_camus_info),
    Challenge(
        key="chaos", title="CHAOS (abdominal CT and MR)", converter="nnunetv2_xdim_convert_chaos",
        exporter="nnunetv2_xdim_export_chaos", preset="chaos", configuration="2d",
        trainers=("nnUNetTrainerXDimEfficientNetB4",),
        datasets=(DatasetSpec.of(CHAOS_CT, ["-m", "CT"], "CT"),
                  DatasetSpec.of(CHAOS_MR, ["-m", "MR"], "MR")),
        trainer_note="Omnia-style 2D with EfficientNet-B4 (Noisy Student weights), as in the paper.",
        published=PUBLISHED_CHAOS, add_options=_chaos_options, select_datasets=_chaos_datasets,
        export_options=_export_with_dataset),
    Challenge(
        key="brats2022", title="BraTS 2022 (glioma MRI)", converter="nnunetv2_xdim_convert_brats2022",
        exporter="nnunetv2_xdim_export_brats2022", preset="brats", configuration="3d_fullres",
        trainers=("nnUNetTrainerXDimEfficientNetB0", "nnUNetTrainerXDimEfficientNetB0_Stacked"),
        datasets=(DatasetSpec.of(BRATS2022),),
        trainer_note=("DX-Net-style inflated 3D (no suffix) and DS-Net-style stacked 3D (_Stacked). EfficientNet-B0 "
                      "is this protocol's choice of backbone for BraTS (override with --trainers)."),
        published=PUBLISHED_BRATS2022, several_inputs=True,
        input_help=("the downloaded release (see the converter's --help); several folders: training and "
                    "validation downloads"),
        export_options=_brats_raw_folders),
)}
