"""OUTPUT/report.md (the protocol, nnU-Net's model choice, the cross-validation in the challenge's metrics, the
published numbers, every command with its status and time) and OUTPUT/commands.sh (what ran, to rerun by hand)."""
import datetime
import json
import os
import platform
import re
import shlex
import time
from typing import List

from ..budget import BUDGET_VARS, NNUNET_BUDGET
from .published import Published
from .settings import PLANS
from .trainer_names import BASELINE


def write_report(p) -> str:
    """Write report.md and commands.sh of the finished protocol `p` (a steps.Protocol); returns report.md's path."""
    s = p.s
    lines = _head(p)
    for folder, r in p.results.items():
        lines += _dataset_section(folder, r, s.output)
    lines += ["## Published numbers", ""]
    if _smoke_reasons(s):
        lines += ["**The run above is a smoke test: do not compare.**", ""]
    lines += [published_markdown(s.challenge.published), ""]
    lines += ["## Commands", "", "Environment for every command:", "", "```sh"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in p.protocol_env().items()]
    lines += [f"export nnUNet_{k}={shlex.quote(v)}" for k, v in p.paths.items()]
    lines += ["```", "", "| step | status | time | command |", "|---|---|---|---|"]
    for st in p.runner.steps:
        if st.status == "comment":
            continue
        note = f" ({st.note})" if st.note else ""
        lines.append(f"| {st.title} | {st.status}{note} | {st.seconds / 60:.1f} min | `{st.line()}` |")
    path = os.path.join(s.output, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(line.replace("\r", "") for line in lines) + "\n")
    write_commands(p)
    print(f"\nreport: {path}", flush=True)
    return path


def write_commands(p) -> None:
    with open(os.path.join(p.s.output, "commands.sh"), "w") as f:
        f.write("#!/usr/bin/env bash\n# what nnunetv2_xdim_protocol ran (skipped steps commented out)\nset -e\n")
        f.write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in p.protocol_env().items()))
        for st in p.runner.steps:
            if st.status == "ran":
                f.write(st.line() + "\n")
            elif st.status == "skipped":
                f.write(f"# skipped: {st.line()}\n")


def published_markdown(pub: Published) -> str:
    n = len(pub.columns)
    rows = [_table_row(["source", "what", *pub.columns]), "|---|---|" + "---|" * n]
    rows += [_table_row([row.source, row.what, *row.cells(n)]) for row in pub.rows]
    return "\n".join(rows) + "\n\n" + pub.caveat


def _table_row(cells: List[str]) -> str:
    return "|" + "".join(f" {c} |" if c else " |" for c in cells)


def _smoke_reasons(s) -> List[str]:
    reduced = (s.budget.get("epochs", NNUNET_BUDGET["epochs"]) < NNUNET_BUDGET["epochs"]
               or s.budget.get("iterations", NNUNET_BUDGET["iterations"]) < NNUNET_BUDGET["iterations"])
    return ((["a tiny training budget"] if s.tiny else ["a reduced training budget"] if reduced else [])
            + ([f"EfficientNet-{s.stand_in.capitalize()} standing in for the paper's backbones"] if s.stand_in else []))


def _head(p) -> List[str]:
    s, ch = p.s, p.s.challenge
    why = _smoke_reasons(s)
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
              + "; ".join(f"{d.folder}: {_n_splits(p, d)} folds" for d in s.datasets) + ")",
              f"- Budget: {_budget_text(s.budget)}",
              f"- Device: {s.device or 'nnU-Net default (cuda)'}; worker processes: {s.num_processes}",
              f"- Machine: {_machine()}",
              f"- Versions: {_versions()}",
              f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
              f"wall time {(time.time() - p.started) / 60:.1f} min", ""]
    return lines


def _dataset_section(folder: str, r: dict, output: str) -> List[str]:
    lines = [f"## {folder}", ""]
    info = r.get("inference_information")
    if info:
        best = info["best_model_or_ensemble"]
        chosen = " + ".join(m["trainer"] for m in best["selected_model_or_models"])
        kind = "ensemble" if len(best["selected_model_or_models"]) > 1 else "single model"
        lines += ["nnU-Net's model selection (`nnUNetv2_find_best_configuration`, mean foreground Dice "
                  "over the cross-validation, nnU-Net's own metric):", "",
                  "| model or ensemble | Dice |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in info["all_results"].items()]
        lines += ["", f"Chosen: **{chosen}** ({kind}); Dice {best['result_on_crossval_pre_pp']:.4f} before, "
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
        rel = os.path.relpath(r["evaluation"], output)
        text = re.sub(r"\]\((?!https?:|/)([^)]+)\)", lambda m: f"]({rel}/{m.group(1)})", text)
        lines += [text, ""]
    else:
        lines += [f"(missing: {summary})", ""]
    return lines


def _n_splits(p, ds) -> str:
    try:
        return str(len(json.load(open(os.path.join(p.dataset_dir(ds, "preprocessed"), "splits_final.json")))))
    except (OSError, ValueError):
        return "?"


def _budget_text(budget) -> str:
    if not budget:
        return ("nnU-Net's default ({epochs} epochs x {iterations} iterations, {val_iterations} validation "
                "iterations)".format(**NNUNET_BUDGET))
    return ", ".join(f"{BUDGET_VARS[k]}={v}" for k, v in budget.items())


def _machine() -> str:
    text = f"{platform.node()}, {platform.platform()}, {os.cpu_count()} CPU cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += ", GPU " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # the report must not fail over a GPU query
        pass
    return text


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("nnunetv2", "nnunetv2-xdim", "torch", "timm"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} (not found)")
    return ", ".join(out) + f", Python {platform.python_version()}"
