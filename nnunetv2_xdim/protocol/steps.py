"""The protocol's steps per dataset: convert, plan, train, pick, predict, export, evaluate, then the report.

Each step is one console command a user could type; the rerun rules (reuse a converted dataset, planned data
and finished folds, continue an interrupted fold) live here, the challenges' differences in their hooks.
"""
import json
import os
import shlex
import shutil
import time
from typing import Dict, List, Optional

from .challenges import DatasetSpec
from .report import write_report
from .runner import Runner
from .settings import PLANS, ProtocolError, Settings, environment, nnunet_paths, protocol_env, train_env
from .trainer_names import BASELINE


class Protocol:
    def __init__(self, s: Settings):
        self.s = s
        self.env = environment(s)
        self.paths = nnunet_paths(s, self.env)
        self.runner = Runner(self.env, os.path.join(s.output, "logs"), s.dry_run)
        self.results: Dict[str, dict] = {}  # per dataset folder: what the report needs
        self.started = time.time()

    def protocol_env(self) -> Dict[str, str]:
        return protocol_env(self.s, self.env)

    def train_env(self) -> Dict[str, str]:
        return train_env(self.s)

    def dataset_dir(self, ds: DatasetSpec, kind: str = "raw") -> str:
        return os.path.join(self.paths[kind], ds.folder)

    def model_folder(self, ds: DatasetSpec, trainer: str) -> str:
        return os.path.join(self.dataset_dir(ds, "results"), f"{trainer}__{PLANS}__{self.s.challenge.configuration}")

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

    def write_report(self) -> str:
        return write_report(self)

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

    # ------------------------------------------------------------------------------ convert, plan, train
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

    # ----------------------------------------------------------------------------- pick, predict, export
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

    def predict_cmd(self, ds, images, out, trainer, configuration, plans, folds, probabilities) -> List[str]:
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

    def ensemble_cmd(self, inputs: List[str], out: str) -> List[str]:
        return ["nnUNetv2_ensemble", "-i", *inputs, "-o", out, "-np", str(self.s.num_processes)]

    def postprocess_cmd(self, inputs: str, out: str, pp_pkl_file: str, plans_json: str) -> List[str]:
        return ["nnUNetv2_apply_postprocessing", "-i", inputs, "-o", out, "-pp_pkl_file", pp_pkl_file,
                "-np", str(self.s.num_processes), "-plans_json", plans_json]

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
            self.runner.run(f"ensemble {ds.folder}", self.ensemble_cmd(outs, merged))
        self.runner.run(f"postprocess {ds.folder}",
                        self.postprocess_cmd(merged, r["final_predictions"], best["postprocessing_file"],
                                             best["some_plans_file"]))

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
        self.runner.run(f"ensemble {ds.folder}", self.ensemble_cmd(outs, os.path.join(base, "ensemble")))
        self.runner.comment("Then, on the single model's or the ensemble's output (PREDICTIONS), with the "
                            "postprocessing and plans files that inference_information.json names:")
        self.runner.run(f"postprocess {ds.folder}",
                        self.postprocess_cmd("PREDICTIONS", os.path.join(base, "postprocessed"),
                                             "BEST/postprocessing.pkl", "BEST/plans.json"))

    def export(self, ds: DatasetSpec) -> None:
        s = self.s
        pred = self.results[ds.folder]["final_predictions"]
        if pred is None:
            return
        sub = os.path.join(s.output, "submission")
        self.results[ds.folder]["submission"] = sub
        cmd = [s.challenge.exporter, "-i", pred, "-o", sub, "-np", str(s.num_processes), "--overwrite"]
        cmd += s.challenge.export_options(s, ds, self.runner.comment)
        self.runner.run(f"export {ds.folder}", cmd)

    # ---------------------------------------------------------------------------------------- evaluate
    def evaluate(self, ds: DatasetSpec) -> None:
        s = self.s
        out = os.path.join(s.output, "evaluation", ds.folder)
        self.results[ds.folder]["evaluation"] = out
        # the baseline first: compare's paired test is against its first run
        runs = [f"{t}={self.model_folder(ds, t)}" for t in [BASELINE] + [t for t in s.trainers if t != BASELINE]]
        cmd = ["nnunetv2_xdim_evaluate", "compare", "--preset", s.challenge.preset,
               "-r", os.path.join(self.dataset_dir(ds), "labelsTr"), "-p", *runs, "-o", out,
               "--folds", *map(str, s.folds), "-np", str(s.num_processes)]
        cmd += s.challenge.evaluate_options(s, ds, self.runner.comment)
        if s.dry_run:
            self.runner.comment("--allow-missing is added when the trained folds leave labelled cases without a "
                                "cross-validation prediction (fewer folds than the split, or CAMUS half-sequence "
                                "frames, which only ever train)")
        elif self._cv_leaves_cases_out(ds):
            cmd.append("--allow-missing")
        self.runner.run(f"evaluate cross-validation {ds.folder}", cmd)

    def _cv_leaves_cases_out(self, ds: DatasetSpec) -> bool:
        splits = json.load(open(os.path.join(self.dataset_dir(ds, "preprocessed"), "splits_final.json")))
        validated = {c for f in self.s.folds if f < len(splits) for c in splits[f]["val"]}
        labels = os.listdir(os.path.join(self.dataset_dir(ds), "labelsTr"))
        return any(n.split(".")[0] not in validated for n in labels)
