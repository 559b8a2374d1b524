"""Models trained with earlier versions keep working: the fixture in tests/fixtures/compat (made before the
networks were reorganised; see make_compat_fixture.py) holds, per network family, the plans saved with a model and
its state-dict manifest, and for two families weights with the logits they gave.

Every record builds as nnU-Net's predictor builds it (the trainer class's static builder, deep supervision off),
with the same state-dict keys, shapes, dtypes and order (optimiser states follow the parameter order); the saved
weights load strictly and give the same logits. And a model trained with SGD continues (--c) with SGD.
"""
import copy
import json
import os

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_xdim.networks.plan import XDIM_KEY, XDimArch
from nnunetv2_xdim.trainers import variants
from plans_util import configuration_dict, plans_dict

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "compat")
with open(os.path.join(FIXTURE, "records.json")) as _f:
    RECORDS = json.load(_f)


@pytest.fixture(scope="module")
def checkpoints():
    return torch.load(os.path.join(FIXTURE, "checkpoints.pt"), map_location="cpu", weights_only=True)


def build(entry: dict) -> torch.nn.Module:
    pm = PlansManager(copy.deepcopy(entry["plans"]))
    cm = pm.get_configuration(entry["configuration"])
    cls = getattr(variants, entry["trainer"])
    return cls.build_network_architecture(pm, cm, entry["num_input_channels"], entry["num_output_channels"],
                                          enable_deep_supervision=False)


def manifest(state: dict) -> list:
    return [f"{k}\t{list(v.shape)}\t{str(v.dtype).replace('torch.', '')}" for k, v in state.items()]


def fingerprint(state: dict) -> list:
    floats = [v.double() for v in state.values() if v.is_floating_point()]
    return [sum(v.sum().item() for v in floats), sum(v.abs().sum().item() for v in floats)]


def test_the_fixture_covers_every_family(checkpoints):
    modes = {(e["configuration"], e["plans"]["configurations"][e["configuration"]][XDIM_KEY]["mode_3d"])
             for e in RECORDS.values()}
    assert {m for c, m in modes if c != "2d"} == {"inflated", "slicewise", "stacked"}
    backbones = {e["plans"]["configurations"]["2d"][XDIM_KEY]["backbone"] for e in RECORDS.values()
                 if e["configuration"] == "2d"}
    assert backbones == {"tf_efficientnet_lite0", "resnet18"}
    assert set(checkpoints) <= set(RECORDS) and len(checkpoints) >= 1
    assert os.path.getsize(os.path.join(FIXTURE, "checkpoints.pt")) < 400_000  # keep the fixture small


@pytest.mark.parametrize("family", sorted(RECORDS))
def test_every_record_builds_with_the_same_state_dict(family):
    entry = RECORDS[family]
    torch.manual_seed(0)
    net = build(entry)
    with open(os.path.join(FIXTURE, "manifests", f"{family}.tsv")) as f:
        expected = f.read().splitlines()
    assert manifest(net.state_dict()) == expected
    assert (None if net.input_norm is None else type(net.input_norm).__name__) == entry["input_norm"]
    # the same random start for a seeded build: modules are made and initialised in the same order
    assert fingerprint(net.state_dict()) == pytest.approx(entry["init_fingerprint"], rel=1e-9)


def test_a_record_without_input_norm_builds_without_it():
    record = RECORDS["2d_lite0_record_v1"]["plans"]["configurations"]["2d"][XDIM_KEY]
    assert record["version"] == 1 and "input_norm" not in record
    assert XDimArch.from_dict(record).input_norm == "none"


@pytest.mark.parametrize("family", ["3d_inflated_lite0_tiny", "3d_slicewise_lite0_tiny"])
def test_saved_weights_load_strictly_and_give_the_same_logits(family, checkpoints):
    saved = checkpoints[family]
    net = build(RECORDS[family])
    net.load_state_dict(saved["state_dict"], strict=True)
    with torch.no_grad():
        logits = net.eval()(saved["input"])
    torch.testing.assert_close(logits, saved["logits"], rtol=1e-5, atol=1e-5)


DATASET_JSON = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "tumour": 1}, "numTraining": 4,
                "file_ending": ".nii.gz"}


def _trainer(tmp_path, monkeypatch, optimizer_name: str, continue_training: bool):
    monkeypatch.setenv("nnUNet_xdim_epochs", "4")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    cls = type("nnUNetTrainerXDimCompatProbe", (variants.nnUNetTrainerXDimEfficientNetLite0,),
               {"optimizer_name": optimizer_name})
    plans = plans_dict("2d", configuration_dict((32, 32), [[1, 1], [2, 2], [2, 2]], features=[8, 16, 24]))
    plans["continue_training"] = continue_training
    trainer = cls(plans, "2d", 0, DATASET_JSON, device=torch.device("cpu"))
    # initialize() only looks at the preprocessed folder to choose the dataset class (by file ending)
    os.makedirs(trainer.preprocessed_dataset_folder, exist_ok=True)
    open(os.path.join(trainer.preprocessed_dataset_folder, "case_000.b2nd"), "w").close()
    trainer.initialize()
    return trainer


def test_a_checkpoint_trained_with_sgd_continues_with_sgd(tmp_path, monkeypatch):
    """What --c does after the default optimiser changed: the checkpoint's optimiser is kept (optimizer_name_of)."""
    from nnunetv2_xdim.trainers.base import optimizer_name_of
    old = _trainer(tmp_path, monkeypatch, "sgd", continue_training=False)
    assert optimizer_name_of(old.optimizer.state_dict()) == "sgd"
    old.current_epoch = 1
    path = str(tmp_path / "checkpoint_latest.pth")
    old.save_checkpoint(path)

    new = _trainer(tmp_path, monkeypatch, "adamw", continue_training=True)
    assert isinstance(new.optimizer, torch.optim.AdamW)
    new.load_checkpoint(path)
    assert isinstance(new.optimizer, torch.optim.SGD) and new.optimizer_name == "sgd"
    assert new.current_epoch == 2  # nnU-Net saves the epoch to continue with
    with open(new.log_file) as f:
        assert "The checkpoint was trained with sgd, this trainer's default is adamw: continuing with sgd" in f.read()
    for a, b in zip(new.network.state_dict().values(), old.network.state_dict().values()):
        assert torch.equal(a, b)
