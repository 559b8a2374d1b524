"""What the publications report for each challenge, as data: the report sets it beside the run's own numbers.

A row is either a challenge ranking (`Ranking`) or scores (`Score`, one value per column of its table).
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

PAPER = "Messaoudi et al., Medical Image Analysis 88 (2023) 102868"
CHAOS_PAPER = "CHAOS challenge paper (Kavur et al., MedIA 2021)"
NNUNET_REVISITED = "nnU-Net Revisited (MICCAI 2024), BraTS 2021, n=1251, 5-fold CV"


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


@dataclass(frozen=True)
class Ranking:
    """A place in a challenge's ranking (on the challenge's own test set)."""

    source: str
    what: str
    place: int

    def cells(self, n_columns: int) -> List[str]:
        return [f"{ordinal(self.place)} place"] + [""] * (n_columns - 1)


@dataclass(frozen=True)
class Score:
    """Published scores, one per column (None: not reported); `approximate`: the source gives them as 'about'."""

    source: str
    what: str
    values: Tuple[Optional[float], ...]
    approximate: bool = False

    def cells(self, n_columns: int) -> List[str]:
        text = [("" if v is None else ("about " if self.approximate else "") + f"{v:g}") for v in self.values]
        return text + [""] * (n_columns - len(text))


@dataclass(frozen=True)
class Published:
    """A challenge's published numbers: the value columns, the rows, and how they compare with a run."""

    columns: Tuple[str, ...]
    rows: Tuple[Union[Ranking, Score], ...]
    caveat: str


PUBLISHED_CAMUS = Published(
    columns=("value",),
    rows=(Ranking(PAPER, "CAMUS challenge ranking", 1),),
    caveat=("The paper is cited here for its ranking only, without per-structure Dice/HD/MAD numbers: there is no "
            "published number to put beside each row of the table above. A challenge ranking is made on the "
            "challenge's own test set, not on a cross-validation like the table above."))

PUBLISHED_CHAOS = Published(
    columns=("value",),
    rows=(Ranking(PAPER, "CHAOS online platform ranking", 3),
          Score(CHAOS_PAPER, "best single-modality Dice, CT liver", (0.98,), approximate=True),
          Score(CHAOS_PAPER, "best single-modality Dice, MR", (0.95,), approximate=True)),
    caveat=("The paper is cited here for its ranking only, without per-organ numbers. The ranking and the challenge "
            "paper's numbers are on the challenge's own test set, not on a cross-validation like the table above."))

PUBLISHED_BRATS2022 = Published(
    columns=("WT", "TC", "ET"),
    rows=(Score(PAPER, "one transfer type (DX or DS)", (91.69, 83.23, 81.75)),
          Score(PAPER, "the other transfer type", (91.22, 84.77, 83.88)),
          Score(NNUNET_REVISITED, "nnU-Net's default, one Dice for the whole task (no per-region split)", (91.24,))),
    caveat=("The two BraTS 2022 rows are the paper's two transfer types; the figures cited here do not say which of "
            "them belongs to the expanded (DX) and which to the stacked (DS) network, nor on which set (validation, "
            "test) they were measured. The nnU-Net Revisited number is a 5-fold cross-validation on BraTS 2021, the "
            "closest like-for-like anchor for the cross-validation table above."))
