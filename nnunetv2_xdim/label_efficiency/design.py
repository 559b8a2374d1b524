"""The experimental design: a fixed test set, nested training subsets of N cases, and nnU-Net folds for them.

The design of a dataset lives next to nnU-Net's `splits_final.json` in the preprocessed dataset folder, as
`label_efficiency.json`: the test set, the pool it leaves, and for every appended fold its N, repeat, training and
validation cases. Folds are only ever appended after the existing ones; the folds nnU-Net (or a converter) made
are never changed. Before anything runs, every recorded fold is checked against the splits file.
"""
import csv
import json
import os
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

DESIGN_FILE = "label_efficiency.json"
SPLITS_FILE = "splits_final.json"
DESIGN_VERSION = 1
MAX_VAL_CASES = 5


class DesignError(Exception):
    """The design cannot be made or no longer matches the splits file; the message says how to fix it."""


def write_json_atomic(path: str, obj) -> None:
    tmp = f"{path}.partial-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- case info


def read_case_info(path: str, cases: Sequence[str]) -> Dict[str, Dict[str, str]]:
    """case -> {"group": ..., "class": ...} from a CSV (columns case[, group][, class]) or a JSON file (a dict
    case -> {group, class}, or a list of such dicts with a "case" key). Unknown cases are an error; cases the file
    leaves out are their own group, without a class."""
    if not os.path.isfile(path):
        raise DesignError(f"case information file {path} not found")
    if path.endswith(".json"):
        with open(path) as f:
            data = json.load(f)
        if isinstance(data, dict) and "cases" in data and isinstance(data["cases"], (list, dict)):
            data = data["cases"]
        rows = [dict(v, case=k) for k, v in data.items()] if isinstance(data, dict) else list(data)
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    info = {}
    for row in rows:
        if not isinstance(row, dict) or "case" not in row:
            raise DesignError(f"{path}: every entry needs a 'case' (columns case[, group][, class])")
        info[str(row["case"])] = {k: str(row[k]) for k in ("group", "class") if row.get(k) not in (None, "")}
    unknown = sorted(set(info) - set(cases))
    if unknown:
        raise DesignError(f"{path} names {len(unknown)} case(s) that are not labelled cases of the dataset, e.g. "
                          f"{unknown[:3]}: fix the file or pass the right one with --case-info")
    return {c: {"group": info.get(c, {}).get("group", c), **({"class": info[c]["class"]}
                                                            if "class" in info.get(c, {}) else {})}
            for c in cases}


# ------------------------------------------------------------------------------------------- test set


def draw_test_set(cases: Sequence[str], size: int, seed: int, info: Dict[str, Dict[str, str]]) -> List[str]:
    """About `size` test cases: whole groups only, and per class (where given) in proportion to the data."""
    if not 0 < size < len(cases):
        raise DesignError(f"a test set of {size} case(s) from {len(cases)} labelled cases leaves no training pool "
                          f"(or is empty): choose --test-size / --test-fraction in between")
    groups: Dict[str, List[str]] = defaultdict(list)
    for c in sorted(cases):
        groups[info[c]["group"]].append(c)
    group_class = {g: _majority([info[c].get("class", "") for c in members]) for g, members in groups.items()}
    per_class: Dict[str, int] = defaultdict(int)
    for g, members in groups.items():
        per_class[group_class[g]] += len(members)
    quota = _proportional(per_class, size)
    order = sorted(groups)
    random.Random(f"test-{seed}").shuffle(order)
    test: List[str] = []
    taken: Dict[str, int] = defaultdict(int)
    for g in order:
        k = group_class[g]
        if taken[k] + len(groups[g]) <= quota[k]:
            test += groups[g]
            taken[k] += len(groups[g])
    return sorted(test)


def _majority(values: List[str]) -> str:
    return max(sorted(set(values)), key=values.count)


def _proportional(counts: Dict[str, int], total: int) -> Dict[str, int]:
    """Largest-remainder allocation of `total` over the classes, in proportion to their counts."""
    n = sum(counts.values())
    exact = {k: total * v / n for k, v in counts.items()}
    alloc = {k: int(e) for k, e in exact.items()}
    for k in sorted(exact, key=lambda k: (alloc[k] - exact[k], k))[:total - sum(alloc.values())]:
        alloc[k] += 1
    return alloc


def read_test_list(path: str, cases: Sequence[str]) -> List[str]:
    """Test cases from a file: one case id per line, or a JSON list."""
    if not os.path.isfile(path):
        raise DesignError(f"test case list {path} not found")
    with open(path) as f:
        text = f.read()
    names = json.loads(text) if path.endswith(".json") else [ln.strip() for ln in text.splitlines() if ln.strip()]
    unknown = sorted(set(names) - set(cases))
    if unknown:
        raise DesignError(f"{path} lists {len(unknown)} case(s) that are not labelled cases of the dataset, e.g. "
                          f"{unknown[:3]}")
    if not names or len(set(names)) >= len(cases):
        raise DesignError(f"{path} must list at least one case and leave a training pool")
    return sorted(set(names))


# --------------------------------------------------------------------------------------------- subsets


def subset(pool: Sequence[str], n: int, repeat: int, seed: int) -> Dict[str, List[str]]:
    """The training cases of (N, repeat): the first N of the repeat's seeded order of the pool, so that the
    subsets of one repeat are nested. Validation (nnU-Net's per-epoch pseudo Dice and its final validation only;
    nothing is selected on it) takes up to MAX_VAL_CASES of the pool cases that follow, or training cases when
    the subset is the whole pool."""
    if n > len(pool):
        raise DesignError(f"N = {n} is larger than the training pool ({len(pool)} cases once the test set is "
                          f"taken): ask for N <= {len(pool)}")
    if n < 1:
        raise DesignError(f"N = {n}: every training subset needs at least one case")
    order = sorted(pool)
    random.Random(f"subset-{seed}-{repeat}").shuffle(order)
    rest = order[n:n + MAX_VAL_CASES] or order[:min(n, MAX_VAL_CASES)]
    return {"train": sorted(order[:n]), "val": sorted(rest)}


# -------------------------------------------------------------------------------------- design + splits


@dataclass
class Design:
    test: List[str]
    pool: List[str]
    seed: int
    test_rule: str
    folds: Dict[int, Dict]  # fold index -> {"n", "repeat", "train", "val"}

    def fold_of(self, n: int, repeat: int) -> Optional[int]:
        for k, f in self.folds.items():
            if f["n"] == n and f["repeat"] == repeat:
                return k
        return None

    def to_dict(self) -> dict:
        return {"version": DESIGN_VERSION, "seed": self.seed, "test_rule": self.test_rule, "test": self.test,
                "pool": self.pool, "folds": {str(k): v for k, v in sorted(self.folds.items())}}

    @classmethod
    def from_dict(cls, d: dict, path: str) -> "Design":
        if d.get("version", 0) > DESIGN_VERSION:
            raise DesignError(f"{path} was written by a newer nnunetv2-xdim: upgrade to use it")
        return cls(list(d["test"]), list(d["pool"]), int(d["seed"]), d.get("test_rule", ""),
                   {int(k): v for k, v in d["folds"].items()})


def default_splits(cases: Sequence[str]) -> List[dict]:
    """nnU-Net's own five folds, exactly as nnUNetv2_train would make them when no splits file exists."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    return generate_crossval_split(sorted(cases), seed=12345, n_splits=5)


class DesignStore:
    """label_efficiency.json and splits_final.json of one preprocessed dataset folder, kept consistent."""

    def __init__(self, preprocessed_folder: str, cases: Sequence[str]):
        self.folder = preprocessed_folder
        self.cases = sorted(cases)
        self.design_path = os.path.join(preprocessed_folder, DESIGN_FILE)
        self.splits_path = os.path.join(preprocessed_folder, SPLITS_FILE)

    def load(self) -> Optional[Design]:
        if not os.path.isfile(self.design_path):
            return None
        with open(self.design_path) as f:
            design = Design.from_dict(json.load(f), self.design_path)
        self.check(design, self.load_splits())
        return design

    def load_splits(self) -> List[dict]:
        if not os.path.isfile(self.splits_path):
            return []
        with open(self.splits_path) as f:
            return json.load(f)

    def check(self, design: Design, splits: List[dict]) -> None:
        """Every recorded fold must be in the splits file as recorded (a missing tail is repaired by ensure())."""
        for k, f in sorted(design.folds.items()):
            if k >= len(splits):
                continue
            if sorted(splits[k].get("train", [])) != f["train"] or sorted(splits[k].get("val", [])) != f["val"]:
                raise DesignError(
                    f"{self.splits_path}: fold {k} no longer matches {self.design_path} (N = {f['n']}, repeat "
                    f"{f['repeat']}): the splits file was changed after the folds were added. Restore it, or move "
                    f"{DESIGN_FILE} away together with the trained models of those folds to start a new design")
        missing = sorted(k for k in design.folds if k >= len(splits))
        if missing and missing != list(range(len(splits), len(splits) + len(missing))):
            raise DesignError(f"{self.splits_path} has {len(splits)} folds but {self.design_path} records folds "
                              f"{missing}: restore the splits file")
        leaked = sorted(set(design.test) & {c for f in design.folds.values() for c in f["train"] + f["val"]})
        if leaked:
            raise DesignError(f"{self.design_path}: test case(s) {leaked[:3]} are in a training fold")

    def ensure(self, design: Design, wanted: Sequence[tuple], write: bool = True) -> Design:
        """Add the folds of every wanted (N, repeat) that the design lacks, after the existing folds, then write
        the design first and the splits file second (a crash in between is repaired on the next call).
        With write=False only the design in memory changes (dry runs)."""
        splits = self.load_splits() or [dict(s) for s in default_splits(self.cases)]
        self.check(design, splits)
        for k in sorted(design.folds):
            if k >= len(splits):  # recorded, but the splits file was not written: append it again
                splits.append({"train": design.folds[k]["train"], "val": design.folds[k]["val"]})
        new = [(n, r) for n, r in wanted if design.fold_of(n, r) is None]
        for n, r in new:
            k = len(splits)
            fold = subset(design.pool, n, r, design.seed)
            design.folds[k] = {"n": n, "repeat": r, **fold}
            splits.append(dict(fold))
        if not write:
            return design
        os.makedirs(self.folder, exist_ok=True)
        if new or not os.path.isfile(self.design_path):
            write_json_atomic(self.design_path, design.to_dict())
        if splits != self.load_splits():
            write_json_atomic(self.splits_path, splits)
        return design
