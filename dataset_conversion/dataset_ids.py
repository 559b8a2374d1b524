"""The nnU-Net dataset id and name each converter writes by default, defined once for the converters and the
paper's protocol (`nnunetv2_xdim_protocol`). Light: no imaging libraries.

Every converter takes `-d/--dataset-id` and `--name` to write elsewhere; these are only the defaults.
"""
from typing import NamedTuple


class DatasetId(NamedTuple):
    """A default nnU-Net dataset: unpacks as `(id, name)`."""

    id: int
    name: str

    @property
    def folder(self) -> str:
        """nnU-Net's folder name, DatasetXXX_Name."""
        return f"Dataset{self.id:03d}_{self.name}"


BRATS2022 = DatasetId(501, "BraTS2022")
CHAOS_CT = DatasetId(502, "CHAOS_CT")
CHAOS_MR = DatasetId(503, "CHAOS_MR")
CAMUS = DatasetId(504, "CAMUS")
CHAOS_MR_T1DUAL = DatasetId(505, "CHAOS_MR_T1dual")  # T1 in-phase and out-phase as two channels
PH2 = DatasetId(506, "PH2")
BUSI = DatasetId(507, "BUSI")
