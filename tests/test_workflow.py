"""nnU-Net's whole workflow with XDim trainers: 5 folds, find_best_configuration against nnU-Net's network,
ensembling, postprocessing, multi-fold prediction. A long chain: `python -m pytest -m slow tests/test_workflow.py`."""
import os

import pytest
from batchgenerators.utilities.file_and_folder_operations import load_json

from e2e_util import nnunet_env, plan_and_preprocess, predict, run, train
from nnunetv2_xdim.synthetic import make_dataset

DATASET = 962
TRAINERS = ["nnUNetTrainerXDimEfficientNetLite0", "nnUNetTrainerXDimBaseline"]


@pytest.mark.slow
def test_five_folds_find_best_configuration_ensemble_postprocess(tmp_path):
    env = nnunet_env(str(tmp_path), epochs=1, iterations=2, val_iterations=1)
    raw = make_dataset(env["nnUNet_raw"], DATASET, "Workflow", (64, 64), n_train=10, n_test=2)
    plan_and_preprocess(DATASET, env)
    for trainer in TRAINERS:
        for fold in range(5):
            train(DATASET, "2d", fold, trainer, env, extra=["--npz"])  # find_best_configuration ensembles
    out = run(["nnUNetv2_find_best_configuration", str(DATASET), "-c", "2d", "-tr", *TRAINERS, "-np", "1"], env).stdout
    results = os.path.join(env["nnUNet_results"], f"Dataset{DATASET}_Workflow")
    instructions = open(os.path.join(results, "inference_instructions.txt")).read()
    assert "nnUNetv2_predict" in instructions, out[-2000:]
    assert os.path.isfile(os.path.join(results, "inference_information.json"))

    preds = []
    for trainer in TRAINERS:
        folder = str(tmp_path / f"pred_{trainer}")
        predict(os.path.join(raw, "imagesTs"), folder, DATASET, "2d", trainer, env,
                folds=("0", "1", "2", "3", "4"), extra=["--save_probabilities"])
        preds.append(folder)
    ensemble = str(tmp_path / "ensemble")
    run(["nnUNetv2_ensemble", "-i", *preds, "-o", ensemble, "-np", "1"], env)
    assert sorted(f for f in os.listdir(ensemble) if f.endswith(".png")) == ["case_010.png", "case_011.png"]

    # postprocessing is chosen on the cross-validation of the best model or ensemble only, and which one wins
    # after two iterations is chance: take the file nnU-Net names, apply it to the XDim trainer's predictions
    best = load_json(os.path.join(results, "inference_information.json"))["best_model_or_ensemble"]
    pp = best["postprocessing_file"]
    assert os.path.isfile(pp), out[-2000:]
    post = str(tmp_path / "postprocessed")
    run(["nnUNetv2_apply_postprocessing", "-i", preds[0], "-o", post, "-pp_pkl_file", pp, "-np", "1",
         "-plans_json", best["some_plans_file"]], env)
    assert sorted(f for f in os.listdir(post) if f.endswith(".png")) == ["case_010.png", "case_011.png"]
