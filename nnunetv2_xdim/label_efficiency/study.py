"""One label-efficiency study of one dataset and configuration: plan, train, predict, score, through nnU-Net's
own commands (nnUNetv2_plan_experiment / _preprocess, nnUNetv2_train, nnUNetv2_predict).

Layout of the output folder (everything a rerun needs to resume):

    study.json                      dataset and configuration of this folder (a folder serves one study)
    test_images/                    links to the test cases' images (nnUNetv2_predict's input)
    models/<budget>/                nnUNet_results of the runs trained at that budget
    predictions/<budget>[_noTTA]/<trainer>__<plans>__<config>/fold_<k>/
    runs/<budget>[_noTTA]/<trainer>__<plans>__<config>/fold_<k>.json      one record per finished run
    logs/                           every command's output
"""
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ..budget import BUDGET_VARS, NNUNET_BUDGET
from ..commands import run_logged, shell_line
from ..discovery import enable_trainer_discovery
from .arms import PLANNERS, Arm
from .design import Design, DesignError, DesignStore, write_json_atomic
from .scoring import score_cases, summarise


class StudyError(Exception):
    pass


@dataclass(frozen=True)
class Budget:
    epochs: int
    iterations: int
    val_iterations: int

    @property
    def tag(self) -> str:
        return f"e{self.epochs}x{self.iterations}v{self.val_iterations}"

    @property
    def is_default(self) -> bool:
        return self.__dict__ == NNUNET_BUDGET

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.iterations

    def env(self) -> Dict[str, str]:
        return {var: str(getattr(self, key)) for key, var in BUDGET_VARS.items()}


@dataclass
class RunSpec:
    arm: Arm
    plans: str   # the plans identifier trained (with the --target-spacing suffix)
    n: int
    repeat: int
    fold: int


def machine_description(device: str) -> str:
    import torch
    if device == "cuda" and torch.cuda.is_available():
        where = torch.cuda.get_device_name(0)
    else:
        where = f"CPU, {os.cpu_count()} cores"
    return f"{platform.node() or 'host'} ({where}, torch {torch.__version__})"


def find_dataset_folder(root: Optional[str], dataset_id: int, variable: str) -> str:
    if not root:
        raise StudyError(f"{variable} is not set: export nnUNet_raw, nnUNet_preprocessed and nnUNet_results "
                         f"(nnU-Net's folders) first")
    prefix = f"Dataset{dataset_id:03d}_"
    found = sorted(d for d in os.listdir(root) if d.startswith(prefix)) if os.path.isdir(root) else []
    if len(found) != 1:
        raise StudyError(f"{'no' if not found else 'more than one'} folder {prefix}* in {variable}={root}"
                         + (f" ({', '.join(found)})" if found else ": convert the dataset first"))
    return os.path.join(root, found[0])


def own_data_identifiers(plans_file: str) -> None:
    """nnU-Net's residual-encoder planners name the 2d and 3d_fullres data 'nnUNetPlans_<config>' whatever the
    plans name, to share the default plans' preprocessed data; at another target spacing that data is not theirs
    (and preprocessing would overwrite the default's). Give each configuration of `plans_file` a data identifier of
    its own plans name, as nnU-Net's default planner does."""
    with open(plans_file) as f:
        plans = json.load(f)
    changed = False
    for name, config in plans.get("configurations", {}).items():
        own = f"{plans['plans_name']}_{name}"
        if "data_identifier" in config and config["data_identifier"] != own:
            config["data_identifier"], changed = own, True
    if changed:
        write_json_atomic(plans_file, plans)


class Study:
    def __init__(self, dataset_id: int, configuration: str, output: str, arms: Sequence[Arm], budget: Budget,
                 device: str, tta: bool, target_spacing: Optional[List[float]], num_processes: int):
        self.dataset_id, self.configuration, self.output = dataset_id, configuration, os.path.abspath(output)
        self.arms, self.budget, self.device, self.tta = list(arms), budget, device, tta
        self.target_spacing, self.num_processes = target_spacing, num_processes
        self.env = dict(os.environ)
        enable_trainer_discovery(self.env)
        self.raw = find_dataset_folder(self.env.get("nnUNet_raw"), dataset_id, "nnUNet_raw")
        self.name = os.path.basename(self.raw)
        pre_root = self.env.get("nnUNet_preprocessed")
        if not pre_root:
            raise StudyError("nnUNet_preprocessed is not set: export nnU-Net's three folders first")
        self.preprocessed = os.path.join(pre_root, self.name)
        with open(os.path.join(self.raw, "dataset.json")) as f:
            self.dataset_json = json.load(f)
        self.file_ending = self.dataset_json["file_ending"]
        self.n_channels = len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))
        self.cases = self._labelled_cases()
        self.variant = budget.tag + ("" if tta else "_noTTA")
        self._machine = None

    # ------------------------------------------------------------------------------------------- data
    def _labelled_cases(self) -> List[str]:
        labels = os.path.join(self.raw, "labelsTr")
        cases = sorted(f[:-len(self.file_ending)] for f in os.listdir(labels) if f.endswith(self.file_ending)) \
            if os.path.isdir(labels) else []
        if not cases:
            raise StudyError(f"{labels} holds no {self.file_ending} label files: the study needs labelled cases")
        missing = [c for c in cases if not os.path.isfile(self.image_file(c, 0))]
        if missing:
            raise StudyError(f"{len(missing)} labelled case(s) have no image in {self.raw}/imagesTr, e.g. "
                             f"{self.image_file(missing[0], 0)}")
        return cases

    def image_file(self, case: str, channel: int) -> str:
        return os.path.join(self.raw, "imagesTr", f"{case}_{channel:04d}{self.file_ending}")

    def check_output_folder(self) -> None:
        """An output folder serves one dataset and configuration; refuse to mix them."""
        path = os.path.join(self.output, "study.json")
        mine = {"dataset": self.name, "configuration": self.configuration}
        if os.path.isfile(path):
            with open(path) as f:
                theirs = json.load(f)
            if {k: theirs.get(k) for k in mine} != mine:
                raise StudyError(f"{self.output} holds the study of {theirs.get('dataset')} "
                                 f"{theirs.get('configuration')}: use another -o for {self.name} {self.configuration}")
        else:
            os.makedirs(self.output, exist_ok=True)
            write_json_atomic(path, mine)

    def design_store(self) -> DesignStore:
        return DesignStore(self.preprocessed, self.cases)

    def test_images(self, design: Design) -> str:
        """nnUNetv2_predict reads a folder: links to the test cases' images (copies where links are not allowed)."""
        folder = os.path.join(self.output, "test_images")
        wanted = {os.path.basename(self.image_file(c, ch)): self.image_file(c, ch)
                  for c in design.test for ch in range(self.n_channels)}
        if os.path.isdir(folder) and sorted(os.listdir(folder)) == sorted(wanted):
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        tmp = folder + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for name, src in wanted.items():
            try:
                os.symlink(src, os.path.join(tmp, name))
            except OSError:
                shutil.copy2(src, os.path.join(tmp, name))
        os.replace(tmp, folder)
        return folder

    # ----------------------------------------------------------------------------------------- plans
    def plans_name(self, arm: Arm) -> str:
        if not self.target_spacing:
            return arm.plans
        return f"{arm.plans}_spacing" + "x".join(f"{v:g}" for v in self.target_spacing)

    def ensure_plans(self, arm: Arm, dry_run: bool) -> str:
        """Fingerprint, plan and preprocess with nnU-Net's commands whatever the arm's plans still lack."""
        plans = self.plans_name(arm)
        pid = str(self.dataset_id)
        plans_file = os.path.join(self.preprocessed, f"{plans}.json")
        fingerprint = os.path.join(self.preprocessed, "dataset_fingerprint.json")
        if os.path.isfile(plans_file) and self._preprocessed_complete(plans_file):
            return plans
        if not os.path.isfile(plans_file) and arm.plans not in PLANNERS:
            raise StudyError(f"plans {plans} not found in {self.preprocessed}, and the study can only make "
                             f"{', '.join(PLANNERS)} itself: plan it with nnU-Net first")
        if not os.path.isfile(fingerprint):
            self._plan_step(["nnUNetv2_extract_fingerprint", "-d", pid, "-np", str(self.num_processes),
                             "--verify_dataset_integrity"], plans, dry_run)
        if not os.path.isfile(plans_file):
            cmd = ["nnUNetv2_plan_experiment", "-d", pid, "-pl", PLANNERS[arm.plans]]
            if self.target_spacing:
                cmd += ["-overwrite_target_spacing", *self._full_spacing(dry_run), "-overwrite_plans_name", plans]
            self._plan_step(cmd, plans, dry_run)
            if self.target_spacing and not dry_run:
                own_data_identifiers(plans_file)
        self._plan_step(["nnUNetv2_preprocess", "-d", pid, "-plans_name", plans, "-c", self.configuration,
                         "-np", str(self.num_processes)], plans, dry_run)
        return plans

    def _plan_step(self, cmd: List[str], plans: str, dry_run: bool) -> None:
        print(f"  {'would run' if dry_run else 'planning'}: {shell_line(cmd)}", flush=True)
        if not dry_run:
            env = {k: v for k, v in self.env.items() if k != "nnUNet_n_proc_DA"}  # 2.8.1's planner crashes with 0
            run_logged(cmd, env, self.log(f"plan_{plans}"), lambda line: False, title=cmd[0])

    def _full_spacing(self, dry_run: bool) -> List[str]:
        """nnU-Net's -overwrite_target_spacing takes three numbers; for 2d, two are given and the first axis keeps
        the dataset's own (nnU-Net's readers give 2D images 999 there)."""
        spacing = [f"{v:g}" for v in self.target_spacing]
        if len(spacing) == 3:
            return spacing
        path = os.path.join(self.preprocessed, "dataset_fingerprint.json")
        if dry_run and not os.path.isfile(path):
            return ["<first axis of the fingerprint>"] + spacing
        with open(path) as f:
            first = sorted(s[0] for s in json.load(f)["spacings"])
        return [f"{first[len(first) // 2]:g}"] + spacing

    def _preprocessed_complete(self, plans_file: str) -> bool:
        with open(plans_file) as f:
            plans = json.load(f)
        config = plans.get("configurations", {}).get(self.configuration)
        if config is None:
            raise StudyError(f"{plans_file} has no configuration {self.configuration!r} (it has "
                             f"{', '.join(plans.get('configurations', {}))})")
        data = os.path.join(self.preprocessed, config.get("data_identifier", ""))
        return os.path.isdir(data) and all(os.path.isfile(os.path.join(data, c + ".pkl")) for c in self.cases)

    # ------------------------------------------------------------------------------------------- runs
    def log(self, name: str) -> str:
        return os.path.join(self.output, "logs", f"{name}.log")

    def model_folder(self, spec: RunSpec) -> str:
        return os.path.join(self.output, "models", self.budget.tag, self.name,
                            f"{spec.arm.trainer}__{spec.plans}__{self.configuration}")

    def prediction_folder(self, spec: RunSpec) -> str:
        return os.path.join(self.output, "predictions", self.variant,
                            f"{spec.arm.trainer}__{spec.plans}__{self.configuration}", f"fold_{spec.fold}")

    def record_path(self, spec: RunSpec) -> str:
        return os.path.join(self.output, "runs", self.variant,
                            f"{spec.arm.trainer}__{spec.plans}__{self.configuration}", f"fold_{spec.fold}.json")

    def train_command(self, spec: RunSpec) -> List[str]:
        cmd = ["nnUNetv2_train", str(self.dataset_id), self.configuration, str(spec.fold), "-tr", spec.arm.trainer,
               "-p", spec.plans, "-device", self.device]
        fold_dir = os.path.join(self.model_folder(spec), f"fold_{spec.fold}")
        if os.path.isfile(os.path.join(fold_dir, "checkpoint_latest.pth")) and \
                not os.path.isfile(os.path.join(fold_dir, "checkpoint_final.pth")):
            cmd.append("--c")
        return cmd

    def predict_command(self, spec: RunSpec, images: str) -> List[str]:
        cmd = ["nnUNetv2_predict", "-i", images, "-o", self.prediction_folder(spec), "-d", str(self.dataset_id),
               "-c", self.configuration, "-tr", spec.arm.trainer, "-p", spec.plans, "-f", str(spec.fold),
               "-chk", "checkpoint_final.pth", "-device", self.device, "-npp", str(self.num_processes),
               "-nps", str(self.num_processes), "--disable_progress_bar"]
        return cmd + ([] if self.tta else ["--disable_tta"])

    def run_env(self) -> Dict[str, str]:
        return dict(self.env, nnUNet_results=os.path.join(self.output, "models", self.budget.tag),
                    **self.budget.env())

    def is_trained(self, spec: RunSpec) -> bool:
        return os.path.isfile(os.path.join(self.model_folder(spec), f"fold_{spec.fold}", "checkpoint_final.pth"))

    def load_record(self, spec: RunSpec) -> Optional[dict]:
        path = self.record_path(spec)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def run(self, spec: RunSpec, design: Design, progress) -> dict:
        """Train (or continue), predict the test set from checkpoint_final, score; returns the run's record."""
        env = self.run_env()
        tag = f"{spec.arm.trainer}__{spec.plans}_N{spec.n}_r{spec.repeat}_fold{spec.fold}"
        train_s = None  # the wall time, when this call trains the model in one go
        if not self.is_trained(spec):
            cmd = self.train_command(spec)
            progress("continuing the training" if "--c" in cmd else "training")
            wall_s = run_logged(cmd, env, self.log(f"train_{self.budget.tag}_{tag}"),
                                 lambda line: False, title=f"training {tag}")
            train_s = None if "--c" in cmd else wall_s
        progress("predicting the test set")
        images = self.test_images(design)
        shutil.rmtree(self.prediction_folder(spec), ignore_errors=True)
        predict_s = run_logged(self.predict_command(spec, images), env, self.log(f"predict_{self.variant}_{tag}"),
                               lambda line: False, title=f"prediction {tag}")
        references = {c: os.path.join(self.raw, "labelsTr", c + self.file_ending) for c in design.test}
        cases = score_cases(self.prediction_folder(spec), references, os.path.join(self.raw, "dataset.json"),
                            self.file_ending)
        record = {"dataset": self.name, "configuration": self.configuration, "trainer": spec.arm.trainer,
                  "plans": spec.plans, "n": spec.n, "repeat": spec.repeat, "fold": spec.fold,
                  "epochs": self.budget.epochs, "iterations": self.budget.iterations,
                  "val_iterations": self.budget.val_iterations, "tta": self.tta, "device": self.device,
                  "machine": self.machine(), **self._train_time(spec, train_s),
                  "predict_s": round(predict_s, 1), "finished": time.strftime("%Y-%m-%d %H:%M"),
                  **summarise(cases), "cases": cases}
        os.makedirs(os.path.dirname(self.record_path(spec)), exist_ok=True)
        write_json_atomic(self.record_path(spec), record)
        return record

    def _train_time(self, spec: RunSpec, wall_s: Optional[float]) -> dict:
        """The training command's wall time when this call trained the model in one go; otherwise (continued
        with --c, or trained by an earlier call) the span of nnU-Net's own epoch timestamps."""
        if wall_s is not None:
            return {"train_s": round(wall_s, 1), "train_time": "nnUNetv2_train wall time"}
        import torch
        ckpt = torch.load(os.path.join(self.model_folder(spec), f"fold_{spec.fold}", "checkpoint_final.pth"),
                          map_location="cpu", weights_only=False, mmap=True)
        log = ckpt["logging"]
        return {"train_s": round(log["epoch_end_timestamps"][-1] - log["epoch_start_timestamps"][0], 1),
                "train_time": "first to last epoch (nnU-Net's timestamps)"}

    def machine(self) -> str:
        if self._machine is None:
            self._machine = machine_description(self.device)
        return self._machine


__all__ = ["Study", "StudyError", "Budget", "RunSpec", "DesignError"]
