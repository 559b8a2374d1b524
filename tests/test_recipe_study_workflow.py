"""results/recipe_study/recipe_study.py prepares its datasets once and reuses them; a preparation killed midway
must not be reused as if complete (training would silently run on fewer cases). Study processes started side by
side share the datasets, runs.csv and the model folders, and must not undo each other's work."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "results", "recipe_study", "recipe_study.py")


def load_recipe_study():
    spec = importlib.util.spec_from_file_location("recipe_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interrupted_preprocessing_is_detected(tmp_path):
    study = load_recipe_study()
    cases = ["case_a", "case_b", "case_c"]
    data_dir = tmp_path / "nnUNetPlans_3d_fullres"
    assert study.missing_preprocessed_cases(str(data_dir), cases) == cases  # never preprocessed
    data_dir.mkdir()
    for case in cases:  # what nnU-Net's preprocessing writes per case: two arrays, then the .pkl
        nnUNetDatasetBlosc2.save_case(np.zeros((1, 4, 8, 8), np.float32), np.zeros((1, 4, 8, 8), np.int16),
                                      {"spacing": [1, 1, 1]}, str(data_dir / case))
    assert study.missing_preprocessed_cases(str(data_dir), cases) == []
    # killed while writing case_b: its arrays may be there, its properties are not yet
    os.remove(data_dir / "case_b.pkl")
    os.remove(data_dir / "case_c_seg.b2nd")
    assert study.missing_preprocessed_cases(str(data_dir), cases) == ["case_b", "case_c"]


def _key(study, arm="slicewise_adamw", fold=0):
    return study.run_key(dict(config="3d_fullres", spacing=3.0, modalities="T1",
                              plans="3.0 mm, plans nnUNetPlans: patch [48, 64, 48]", arm=arm, fold=fold, repeat=0,
                              train_cases=4, epochs=16, iterations=25))


SECOND_PROCESS = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("recipe_study", sys.argv[1])
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)
key = study.run_key(dict(config="3d_fullres", spacing=3.0, modalities="T1",
                         plans="3.0 mm, plans nnUNetPlans: patch [48, 64, 48]", arm="slicewise_adamw", fold=0,
                         repeat=0, train_cases=4, epochs=16, iterations=25))
with study.fold_to_train(sys.argv[2], 0, key, sys.argv[3]) as skip:
    print(skip)
"""


def test_a_fold_in_training_is_left_to_its_process(tmp_path):
    """Two study processes started side by side with the same arm and fold: the second must neither remove the
    first one's run in progress nor train the fold twice; once the run is recorded, nobody trains it again."""
    study = load_recipe_study()
    model = tmp_path / "nnUNetTrainerXDimLite0R_SliceWiseAdamW__nnUNetPlans__3d_fullres"
    runs = str(tmp_path / "runs.csv")
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"a run of another budget")

    def second_process():
        out = subprocess.run([sys.executable, "-c", SECOND_PROCESS, SCRIPT, str(model), runs],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    with study.fold_to_train(str(model), 0, _key(study), runs) as skip:
        assert skip is None
        assert not (model / "fold_0").exists()  # the other budget's fold is removed: nnU-Net would skip it
        (model / "fold_0").mkdir()
        (model / "fold_0" / "checkpoint_latest.pth").write_bytes(b"in progress")
        assert second_process() == "another study process is training it"
        assert (model / "fold_0" / "checkpoint_latest.pth").read_bytes() == b"in progress"
        # another fold or arm is free meanwhile
        with study.fold_to_train(str(model), 1, _key(study, fold=1), runs) as other:
            assert other is None
        study.record_run(runs, dict(config="3d_fullres", spacing=3.0, modalities="T1", arm="slicewise_adamw",
                                    plans="3.0 mm, plans nnUNetPlans: patch [48, 64, 48]", fold=0, repeat=0,
                                    train_cases=4, epochs=16, iterations=25, dice_mean="0.5000"))
    assert second_process() == "recorded"
    assert (model / "fold_0" / "checkpoint_latest.pth").exists()
    assert [r["dice_mean"] for r in study.load_runs(runs)] == ["0.5000"]


def test_every_arm_is_a_trainer_nnunet_finds():
    """An arm whose trainer nnU-Net cannot find fails only after the study has prepared its dataset; its twin and
    'current recipe' reference must be arms too, or the report silently leaves the comparison out."""
    study = load_recipe_study()
    for arm in study.ARMS.values():
        for ref in (arm.twin, arm.base):
            assert ref is None or ref in study.ARMS, (arm.name, ref)
    env = dict(os.environ)
    env.pop("nnUNet_extTrainer", None)
    study.add_study_trainers(env)  # the study's own trainer path, as its main() sets it
    script = ("import json, sys\n"
              "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name\n"
              "print(json.dumps({n: recursive_find_trainer_class_by_name(n).__name__ for n in sys.argv[1:]}))\n")
    names = sorted({arm.trainer for arm in study.ARMS.values()})
    p = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {n: n for n in names}
