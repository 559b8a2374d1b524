"""nnunetv2_xdim_protocol: the printed command sequence (dry runs), the rerun rules, and the tiny-budget chain run
end to end on generated challenge releases (EfficientNet-Lite0 standing in for the paper's backbones)."""
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from challenge_fixtures import make_brats, make_camus_2019, make_camus_2023, make_chaos
from e2e_util import nnunet_env
from nnunetv2_xdim import protocol

B0, B4, LITE0, BASE = ("nnUNetTrainerXDimEfficientNetB0", "nnUNetTrainerXDimEfficientNetB4",
                       "nnUNetTrainerXDimEfficientNetLite0", "nnUNetTrainerXDimBaseline")
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


# ------------------------------------------------------------------------------------------ dry runs


def dry_run(capsys, monkeypatch, argv, nnunet_root=None):
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    for var in NNUNET_VARS:
        if nnunet_root is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, os.path.join(nnunet_root, var))
    protocol.main(argv + ["--dry-run"])
    out = capsys.readouterr().out
    commands = [shlex.split(line) for line in out.splitlines() if line and not line.startswith(("#", "export "))]
    return out, commands


def program(cmd):
    """The command name, after VAR=value prefixes."""
    return next(c for c in cmd if "=" not in c or c.startswith("-"))


def test_dry_run_camus_prints_the_whole_chain(tmp_path, capsys, monkeypatch):
    out, cmds = dry_run(capsys, monkeypatch, ["camus", "-i", str(tmp_path / "CAMUS"), "-o", str(tmp_path / "out")])
    progs = [program(c) for c in cmds]
    assert progs == (["nnunetv2_xdim_convert_camus", "nnUNetv2_plan_and_preprocess"] + ["nnUNetv2_train"] * 10
                     + ["nnUNetv2_find_best_configuration"] + ["nnUNetv2_predict"] * 3
                     + ["nnUNetv2_ensemble", "nnUNetv2_apply_postprocessing", "nnunetv2_xdim_export_camus",
                        "nnunetv2_xdim_evaluate"])
    assert cmds[0][cmds[0].index("-d") + 1] == "504" and cmds[0][cmds[0].index("--folds") + 1] == "5"
    assert cmds[1][:6] == ["nnUNetv2_plan_and_preprocess", "-d", "504", "-c", "2d", "-np"]
    trains = [c for c in cmds if program(c) == "nnUNetv2_train"]
    assert [(c[3], c[5]) for c in trains] == [(str(f), t) for t in (B0, BASE) for f in range(5)]
    assert all(c[:3] == ["nnUNetv2_train", "504", "2d"] and "--npz" in c and "-device" not in c for c in trains)
    best = cmds[12]
    assert best[:4] == ["nnUNetv2_find_best_configuration", "504", "-c", "2d"]
    assert best[best.index("-tr") + 1:best.index("-p")] == [B0, BASE]
    assert best[best.index("-f") + 1:best.index("-np")] == ["0", "1", "2", "3", "4"]
    # the model choice is only known at run time: both forms, marked as such
    assert "depend on nnUNetv2_find_best_configuration's choice" in out
    assert "inference_information.json" in out
    single, m1, m2 = cmds[13:16]
    assert "--save_probabilities" not in single and "--save_probabilities" in m1 and "--save_probabilities" in m2
    assert single[single.index("-i") + 1] == "$nnUNet_raw/Dataset504_CAMUS/imagesTs"
    assert cmds[16][cmds[16].index("-i") + 1:cmds[16].index("-o")] == [m1[m1.index("-o") + 1], m2[m2.index("-o") + 1]]
    export = cmds[18]
    assert export[export.index("-i") + 1] == cmds[17][cmds[17].index("-o") + 1]
    assert export[export.index("-o") + 1] == str(tmp_path / "out" / "submission")
    ev = cmds[19]
    assert ev[:4] == ["nnunetv2_xdim_evaluate", "compare", "--preset", "camus"]
    runs = ev[ev.index("-p") + 1:ev.index("-o")]
    assert runs == [f"{t}=$nnUNet_results/Dataset504_CAMUS/{t}__nnUNetPlans__2d" for t in (BASE, B0)]  # baseline first
    assert "export nnUNet_extTrainer=" in out and "nnUNet_xdim_epochs" not in out  # no budget: nnU-Net's own
    assert not (tmp_path / "out").exists()


def test_dry_run_chaos_tiny_stand_in(tmp_path, capsys, monkeypatch):
    out, cmds = dry_run(capsys, monkeypatch, ["chaos", "-i", str(tmp_path / "CHAOS"), "-o", str(tmp_path / "o"),
                                              "--tiny", "--stand-in", "lite0", "--folds", "0", "1"], str(tmp_path))
    assert "SMOKE TEST" not in out and "STAND-IN" in out
    for line in ("export nnUNet_xdim_epochs=1", "export nnUNet_xdim_iterations=2",
                 "export nnUNet_xdim_val_iterations=1", "export nnUNet_compile=f"):
        assert line in out
    converts = [c for c in cmds if program(c) == "nnunetv2_xdim_convert_chaos"]
    assert [(c[c.index("-m") + 1], c[c.index("-d") + 1]) for c in converts] == [("CT", "502"), ("MR", "503")]
    trains = [c for c in cmds if program(c) == "nnUNetv2_train"]
    assert [(c[2], c[4], c[6]) for c in trains] == [(d, f, t) for d in ("502", "503") for t in (LITE0, BASE)
                                                     for f in ("0", "1")]
    assert all(c[0] == "nnUNet_n_proc_DA=0" and c[-2:] == ["-device", "cpu"] for c in trains)
    plans = [c for c in cmds if program(c) == "nnUNetv2_plan_and_preprocess"]
    assert len(plans) == 2 and not any("nnUNet_n_proc_DA" in " ".join(c) for c in plans)  # crashes the planner
    exports = [c for c in cmds if program(c) == "nnunetv2_xdim_export_chaos"]
    assert [c[c.index("-o") + 1] for c in exports] == [str(tmp_path / "o" / "submission")] * 2  # one submission
    assert [c[c.index("-d") + 1] for c in exports] == ["502", "503"]
    assert len([c for c in cmds if program(c) == "nnunetv2_xdim_evaluate"]) == 2
    assert os.path.join(str(tmp_path), "nnUNet_raw", "Dataset503_CHAOS_MR", "imagesTs") in out


def test_dry_run_brats_trainers_and_override(tmp_path, capsys, monkeypatch):
    argv = ["brats2022", "-i", str(tmp_path / "train"), str(tmp_path / "val"), "-o", str(tmp_path / "o"),
            "--folds", "0"]
    _, cmds = dry_run(capsys, monkeypatch, argv)
    assert cmds[0][:4] == ["nnunetv2_xdim_convert_brats2022", "-i", str(tmp_path / "train"), str(tmp_path / "val")]
    trains = [c for c in cmds if program(c) == "nnUNetv2_train"]
    assert [(c[2], c[5]) for c in trains] == [("3d_fullres", t) for t in (B0, B0 + "_Stacked", BASE)]
    best = next(c for c in cmds if program(c) == "nnUNetv2_find_best_configuration")
    assert best[best.index("-tr") + 1:best.index("-p")] == [B0, B0 + "_Stacked", BASE]
    assert next(c for c in cmds if program(c) == "nnunetv2_xdim_evaluate")[3] == "brats"

    _, cmds = dry_run(capsys, monkeypatch, argv + ["--trainers", "nnUNetTrainerXDimResNet_SliceWise", BASE,
                                                   "--stand-in", "lite0", "--epochs", "3", "-d", "611"])
    trains = [c for c in cmds if program(c) == "nnUNetv2_train"]
    assert [(c[1], c[5]) for c in trains] == [("611", LITE0 + "_SliceWise"), ("611", BASE)]


def test_stand_in_mapping():
    assert protocol.stand_in_trainer(B0 + "_Stacked", "lite0") == LITE0 + "_Stacked"
    assert protocol.stand_in_trainer(B4, "lite2") == "nnUNetTrainerXDimEfficientNetLite2"
    assert protocol.stand_in_trainer("nnUNetTrainerXDimResNet_SliceWise_Scratch", "lite0") == \
        LITE0 + "_SliceWise_Scratch"
    assert protocol.stand_in_trainer(BASE, "lite0") == BASE
    assert protocol.stand_in_trainer("nnUNetTrainer", "lite0") == "nnUNetTrainer"


def _fails(capsys, argv, match):
    with pytest.raises(SystemExit) as e:
        protocol.main(argv)
    assert e.value.code == 1
    assert match in capsys.readouterr().err


def test_clear_errors(tmp_path, capsys, monkeypatch):
    os.makedirs(tmp_path / "in")
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    base = ["camus", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o")]
    _fails(capsys, base, "nnUNet_preprocessed not set")
    _fails(capsys, base + ["--trainers", "nnUNetTrainerXDimEfficientNetB9"], "unknown trainer nnUNetTrainerXDimEff")
    _fails(capsys, base + ["--folds", "0", "4", "--split-folds", "3"], "--split-folds 3 makes folds 0..2")
    _fails(capsys, ["camus", "-i", str(tmp_path / "nowhere"), "-o", "o"], "does not exist")
    assert not (tmp_path / "o").exists()


def _protocol_with_recorder(tmp_path, monkeypatch, argv):
    for var in NNUNET_VARS:
        monkeypatch.setenv(var, str(tmp_path / var))
        os.makedirs(tmp_path / var, exist_ok=True)
    os.makedirs(tmp_path / "in", exist_ok=True)
    args = protocol.build_parser().parse_args(["camus", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o")] + argv)
    p = protocol.Protocol(protocol.settings_from_args(args))
    ran = []
    monkeypatch.setattr(p.runner, "run", lambda title, cmd, env=None, unset=(): ran.append((title, cmd, env, unset)))
    return p, ran


def test_rerun_reuses_what_exists(tmp_path, monkeypatch):
    """An interrupted protocol reruns safely: existing dataset, plans and finished folds are reused."""
    p, ran = _protocol_with_recorder(tmp_path, monkeypatch, ["--tiny", "--stand-in", "lite0"])
    ds = p.s.datasets[0]
    os.makedirs(tmp_path / "nnUNet_raw" / "Dataset504_CAMUS")
    pre = tmp_path / "nnUNet_preprocessed" / "Dataset504_CAMUS"
    os.makedirs(pre / "nnUNetPlans_2d")
    (pre / "nnUNetPlans_2d" / "case.b2nd").write_text("")
    (pre / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"2d": {"data_identifier": "nnUNetPlans_2d"}}}))
    model = tmp_path / "nnUNet_results" / "Dataset504_CAMUS" / f"{LITE0}__nnUNetPlans__2d"
    for fold, files in {0: ["checkpoint_final.pth", "validation/a.npz"], 1: ["checkpoint_final.pth", "validation/a.nii.gz"],
                        2: ["checkpoint_latest.pth"]}.items():
        for f in files:
            os.makedirs((model / f"fold_{fold}" / f).parent, exist_ok=True)
            (model / f"fold_{fold}" / f).write_text("")
    p.convert(ds)
    p.plan(ds)
    for fold in range(4):
        p.train(ds, LITE0, fold)
    skipped = [s.title for s in p.runner.steps if s.status == "skipped"]
    assert skipped == ["convert Dataset504_CAMUS", "plan and preprocess Dataset504_CAMUS",
                       f"train Dataset504_CAMUS {LITE0} fold 0"]
    assert [(r[1][3], r[1][-1]) for r in ran] == [("1", "--val"), ("2", "--c"), ("3", "cpu")]
    assert all(r[2] == {"nnUNet_n_proc_DA": "0"} for r in ran)

    # the same id under another name is never touched
    os.rename(tmp_path / "nnUNet_raw" / "Dataset504_CAMUS", tmp_path / "nnUNet_raw" / "Dataset504_Other")
    with pytest.raises(protocol.ProtocolError, match="dataset id 504 is already taken by Dataset504_Other"):
        p.convert(ds)
    # --overwrite: everything anew
    p, ran = _protocol_with_recorder(tmp_path, monkeypatch, ["--overwrite", "--folds", "0"])
    os.rename(tmp_path / "nnUNet_raw" / "Dataset504_Other", tmp_path / "nnUNet_raw" / "Dataset504_CAMUS")
    p.convert(ds)
    p.plan(ds)
    p.train(ds, LITE0, 0)
    assert ran[0][1][-1] == "--overwrite" and ran[1][1][0] == "nnUNetv2_plan_and_preprocess"
    assert ran[2][1][-1] == "--npz"  # trained anew: neither --c nor --val


def test_planner_never_sees_n_proc_da_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    p, ran = _protocol_with_recorder(tmp_path, monkeypatch, [])
    p.plan(p.s.datasets[0])
    assert ran[0][3] == ["nnUNet_n_proc_DA"]


def test_failing_step_says_what_and_why(tmp_path):
    runner = protocol.Runner(dict(os.environ), str(tmp_path), dry_run=False)
    cmd = [sys.executable, "-c", "import sys; print('lots of output'); print('the real reason'); sys.exit(3)"]
    with pytest.raises(protocol.ProtocolError) as e:
        runner.run("a step", cmd)
    msg = str(e.value)
    assert "step 'a step' failed with exit status 3" in msg and "the real reason" in msg and "sys.exit(3)" in msg
    assert "the real reason" in open(os.path.join(tmp_path, "01_a_step.log")).read()
    with pytest.raises(protocol.ProtocolError, match="command nnUNetv2_no_such_command not found"):
        runner.run("missing", ["nnUNetv2_no_such_command"])


def test_console_command():
    run = subprocess.run(["nnunetv2_xdim_protocol", "camus", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--stand-in" in run.stdout and "--dry-run" in run.stdout


# ------------------------------------------------------------------------------- the tiny chain, for real


def run_protocol(tmp_path, argv):
    env = nnunet_env(str(tmp_path / "nnunet"))
    out = tmp_path / "protocol"
    p = subprocess.run(["nnunetv2_xdim_protocol", *argv, "-o", str(out), "--tiny", "--stand-in", "lite0"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3000)
    assert p.returncode == 0, p.stdout[-6000:]
    return env, out, p.stdout


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names)


def check_common(env, out, dataset, trainers, structure, configuration="2d"):
    results = os.path.join(env["nnUNet_results"], dataset)
    info = json.load(open(os.path.join(results, "inference_information.json")))
    n_models = len(trainers)
    # find_best_configuration compared every model and every pair (ensembles need the --npz of training)
    assert len(info["all_results"]) == n_models + n_models * (n_models - 1) // 2
    assert len(os.listdir(os.path.join(results, "ensembles"))) == n_models * (n_models - 1) // 2
    for t in trainers:
        for fold in (0, 1):
            assert os.path.isfile(os.path.join(results, f"{t}__nnUNetPlans__{configuration}", f"fold_{fold}",
                                               "checkpoint_final.pth"))
    ev = out / "evaluation" / dataset
    for name in ("metrics_per_case.csv", "summary.md", "boxplots.png"):
        assert (ev / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "SMOKE TEST, NOT A REPRODUCTION" in report
    assert f"| {structure} |" in report and f"| structure | {BASE} | {LITE0}" in report
    assert "## Published numbers" in report and "nnUNetv2_find_best_configuration" in report
    assert (out / "commands.sh").is_file()
    return report


def test_tiny_chain_camus_2019(tmp_path):
    src = make_camus_2019(str(tmp_path / "CAMUS"), size=(64, 48))
    env, out, _ = run_protocol(tmp_path, ["camus", "-i", src, "--folds", "0", "1"])
    report = check_common(env, out, "Dataset504_CAMUS", [LITE0, BASE], "LV_endo")
    assert "1st place" in report
    # the release's own layout: patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}.mhd + .raw, test patients only
    assert files_under(out / "submission") == sorted(
        f"{p}/{p}_{v}_{i}.{ext}" for p in ("patient0451", "patient0452") for v in ("2CH", "4CH")
        for i in ("ED", "ES") for ext in ("mhd", "raw"))
    # three subGroup lists = three folds; two trained: the evaluation says which cases it left out
    assert (out / "evaluation" / "Dataset504_CAMUS" / "camus_clinical.csv").is_file()
    assert "--allow-missing" in (out / "commands.sh").read_text()


CHAOS_MR_FILES = sorted([f"Task{t}/MR/4/T1DUAL/Results/img{i:03d}.png" for t in (1, 3, 4, 5) for i in range(4)]
                        + [f"Task{t}/MR/4/T2SPIR/Results/img{i:03d}.png" for t in (1, 3, 4, 5) for i in range(3)])


def test_tiny_chain_chaos_mr(tmp_path):
    """MR only in CI (the richer layout: two sequences, four organs); CT joins it in the slow test below."""
    src = make_chaos(str(tmp_path / "CHAOS"), shape=(32, 32), slices=4)
    env, out, _ = run_protocol(tmp_path, ["chaos", "-i", src, "--modalities", "MR", "--folds", "0", "1",
                                          "--split-folds", "2"])
    report = check_common(env, out, "Dataset503_CHAOS_MR", [LITE0, BASE], "spleen")
    assert "3rd place" in report and "0.95" in report
    assert not os.path.exists(os.path.join(env["nnUNet_raw"], "Dataset502_CHAOS_CT"))
    # Task<k>/MR/<id>/{T1DUAL,T2SPIR}/Results/imgNNN.png, one PNG per DICOM file
    assert files_under(out / "submission") == CHAOS_MR_FILES


@pytest.mark.slow
def test_tiny_chain_chaos_ct_and_mr_one_submission(tmp_path):
    src = make_chaos(str(tmp_path / "CHAOS"), shape=(32, 32), slices=4)
    env, out, _ = run_protocol(tmp_path, ["chaos", "-i", src, "--folds", "0", "1", "--split-folds", "2"])
    check_common(env, out, "Dataset502_CHAOS_CT", [LITE0, BASE], "liver")
    check_common(env, out, "Dataset503_CHAOS_MR", [LITE0, BASE], "spleen")
    ct = [f"Task{t}/CT/3/Results/img{i:03d}.png" for t in (1, 2, 4) for i in range(4)]
    assert files_under(out / "submission") == sorted(ct + CHAOS_MR_FILES)


def _brats_chain(tmp_path, extra, trainers):
    train = make_brats(str(tmp_path / "Training"), [f"BraTS2021_{i:05d}" for i in (0, 2, 3, 5)], "2021",
                       shape=(16, 32, 32))
    val = make_brats(str(tmp_path / "Validation"), ["BraTS2021_00001"], "2021", labelled=False, shape=(16, 32, 32))
    env, out, _ = run_protocol(tmp_path, ["brats2022", "-i", train, val, "--folds", "0", "1", "--split-folds", "2",
                                          *extra])
    check_common(env, out, "Dataset501_BraTS2022", trainers, "WT", "3d_fullres")
    report = (out / "report.md").read_text()
    assert "91.69" in report and "do not say which" in report
    assert files_under(out / "submission") == ["BraTS2021_00001.nii.gz"]
    seg = sitk.ReadImage(str(out / "submission" / "BraTS2021_00001.nii.gz"))
    ref = sitk.ReadImage(os.path.join(val, "BraTS2021_00001", "BraTS2021_00001_t1.nii.gz"))
    assert set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 1, 2, 4}
    assert seg.GetSize() == ref.GetSize() and seg.GetDirection() == ref.GetDirection()
    assert f"--raw {val}" in (out / "commands.sh").read_text()


def test_tiny_chain_brats2022_stacked(tmp_path):
    """CI keeps one 3D arm (stacked, DS-Net) against the baseline: each arm costs minutes on 2 cores."""
    _brats_chain(tmp_path, ["--trainers", "nnUNetTrainerXDimEfficientNetB0_Stacked"], [LITE0 + "_Stacked", BASE])


@pytest.mark.slow
def test_tiny_chain_brats2022_paper_arms(tmp_path):
    """The paper's arms, inflated and stacked, and the baseline: three models, three ensembles."""
    _brats_chain(tmp_path, [], [LITE0, LITE0 + "_Stacked", BASE])


@pytest.mark.slow
def test_tiny_chain_camus_2023_five_folds_and_rerun(tmp_path):
    """The full five-fold protocol (CAMUS 2023 release with half sequences), then a rerun that reuses it all."""
    src = make_camus_2023(str(tmp_path / "CAMUS"), size=(64, 48))
    env, out, _ = run_protocol(tmp_path, ["camus", "-i", src, "--half-sequence"])
    results = os.path.join(env["nnUNet_results"], "Dataset504_CAMUS")
    for t in (LITE0, BASE):
        for fold in range(5):
            assert os.path.isfile(os.path.join(results, f"{t}__nnUNetPlans__2d", f"fold_{fold}",
                                               "checkpoint_final.pth"))
    assert json.load(open(os.path.join(results, "inference_information.json")))["folds"] == [0, 1, 2, 3, 4]
    assert files_under(out / "submission") == sorted(
        f"{p}/{p}_{v}_{i}.nii.gz" for p in ("patient0007", "patient0008") for v in ("2CH", "4CH") for i in ("ED", "ES"))
    # half-sequence frames only ever train: the evaluation is told to skip them
    assert "--allow-missing" in (out / "commands.sh").read_text()

    _, _, log = run_protocol(tmp_path, ["camus", "-i", src, "--half-sequence"])
    assert log.count(": skipped (") == 2 + 10
    assert "report: " in log
