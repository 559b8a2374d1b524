"""The networks' public hooks: encoder subclasses through `build_network(encoder_mixins=...)` (what a study or a
user's variant overrides, without patching a built network), and the backbone level map."""
import pytest
import torch

from nnunetv2_xdim.backbones.timm_backbone import (backbone_stem, create_features_model, feature_levels,
                                                   module_levels, tensor_levels)
from nnunetv2_xdim.networks.build import MODES_3D, build_network, encoder_class
from nnunetv2_xdim.networks.plan import XDimArch
from nnunetv2_xdim.transfer.rules import centre
from plans_util import plan_arch

pytestmark = pytest.mark.usefixtures("one_thread")

LITE0 = "tf_efficientnet_lite0"
# stage 0 has Lite0's 32 stem filters (3x3), so the stem fits it
PLAN_2D = plan_arch((16, 16), [[1, 1], [2, 2], [2, 2]], features=[32, 16, 24])
PLAN_3D = plan_arch((4, 16, 16), [[1, 1, 1], [1, 2, 2], [2, 2, 2]], kernels=[[1, 3, 3], [1, 3, 3], [3, 3, 3]],
                    features=[32, 16, 24])
CASES = [("2d", PLAN_2D)] + [(mode, PLAN_3D) for mode in MODES_3D]


class Marker:
    """A mixin that changes nothing."""


class StemStart:
    full_res_stem_start = True


@pytest.mark.parametrize("mode, plan", CASES, ids=[c[0] for c in CASES])
def test_mixins_keep_the_architecture_and_the_random_start(mode, plan):
    arch = XDimArch(LITE0, mode_3d=mode if mode != "2d" else "inflated")
    torch.manual_seed(0)
    plain = build_network(arch, plan, 1, 2, False)
    torch.manual_seed(0)
    mixed = build_network(arch, plan, 1, 2, False, encoder_mixins=(Marker,))
    assert isinstance(mixed.encoder, Marker) and isinstance(mixed.encoder, type(plain.encoder))
    assert type(mixed.encoder).__mro__[1:3] == (Marker, type(plain.encoder))
    assert list(mixed.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(mixed.state_dict().values(), plain.state_dict().values()))
    # one class per combination: networks built twice have the same type
    assert encoder_class(arch, plan, (Marker,)) is type(mixed.encoder)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown 3D mode 'voxelwise'"):
        build_network(XDimArch(LITE0, mode_3d="voxelwise"), PLAN_3D, 1, 2, False)


def test_which_parameters_count_as_pretrained():
    """`pretrained_parameters` chooses the trainer's encoder group: here the stem and the first level only."""

    class FirstLevelPretrained:
        def pretrained_parameters(self):
            levels = tensor_levels(self.backbone)
            return (p for name, p in self.backbone.named_parameters() if levels[name] < 1)

    net = build_network(XDimArch(LITE0), PLAN_2D, 1, 2, False, encoder_mixins=(FirstLevelPretrained,))
    chosen = {id(p) for p in net.pretrained_parameters()}
    names = {n for n, p in net.encoder.backbone.named_parameters() if id(p) in chosen}
    assert "conv_stem.weight" in names and any(n.startswith("blocks.0.") for n in names)
    assert not any(n.startswith("blocks.1.") for n in names) and len(chosen) < len(list(net.encoder.backbone.parameters()))


def test_the_2d_source_of_the_weights_can_be_replaced():
    """`build_2d_backbone` is what the trainer loads ImageNet weights into and `load_pretrained` copies from."""

    class ConstantStem:
        def build_2d_backbone(self, **timm_kwargs):
            model = super().build_2d_backbone(**timm_kwargs)
            with torch.no_grad():
                model.conv_stem.weight.fill_(0.25)
            return model

    for mode, plan in (("inflated", PLAN_2D), ("slicewise", PLAN_3D)):
        net = build_network(XDimArch(LITE0, mode_3d=mode), plan, 2, 2, False, encoder_mixins=(ConstantStem,))
        net.load_pretrained(net.build_2d_backbone())
        assert torch.all(net.encoder.backbone.conv_stem.weight == 0.25)


def test_the_input_can_be_mapped_before_the_encoder():
    class Silenced:
        def forward(self, x):
            return super().forward(torch.zeros_like(x))

    torch.manual_seed(0)
    plain = build_network(XDimArch(LITE0), PLAN_2D, 1, 2, False).eval()
    torch.manual_seed(0)
    silenced = build_network(XDimArch(LITE0), PLAN_2D, 1, 2, False, encoder_mixins=(Silenced,)).eval()
    with torch.no_grad():
        torch.testing.assert_close(silenced(torch.randn(1, 1, 16, 16)), plain(torch.zeros(1, 1, 16, 16)))


def _stage0(encoder):
    return encoder.full_res.convs[0].conv.weight


@pytest.mark.parametrize("mode", ["slicewise", "stacked"])
def test_full_res_stem_start_is_opt_in_for_slicewise_and_stacked(mode):
    arch = XDimArch(LITE0, mode_3d=mode)
    default = build_network(arch, PLAN_3D, 1, 2, False)
    before = {k: v.clone() for k, v in default.state_dict().items()}
    assert "random" in default.full_res_from_stem()
    assert all(torch.equal(before[k], v) for k, v in default.state_dict().items())

    net = build_network(arch, PLAN_3D, 1, 2, False, encoder_mixins=(StemStart,))
    message = net.full_res_from_stem()
    assert "from the ImageNet stem" in message
    if mode == "slicewise":  # the 2D stem in the middle slice of stage 0's depth kernel
        stem = backbone_stem(net.encoder.backbone)[0].weight
        torch.testing.assert_close(_stage0(net.encoder), centre(stem.detach(), _stage0(net.encoder).shape[2]))
    else:  # the 2D core's stage reads the compressed slab: the stem as it is; the 3D stem stays random
        core = net.encoder.core_encoder
        torch.testing.assert_close(_stage0(core), backbone_stem(core.backbone)[0].weight.detach())


@pytest.mark.parametrize("name, n_levels", [(LITE0, 5), ("resnet18", 5), ("resnet18", 3)])
def test_level_map(name, n_levels):
    model = create_features_model(name, 1, n_levels)
    levels = module_levels(model)
    order = [levels[n] for n, _ in model.named_modules()]
    assert order == sorted(order) and set(order) == set(range(n_levels))  # levels follow execution order
    stem, _ = backbone_stem(model)
    assert levels[next(n for n, m in model.named_modules() if m is stem)] == 0
    for level in feature_levels(model):
        assert all(levels[n] == level.index for n, _ in level.downsamplers)
    by_key = tensor_levels(model)
    assert list(by_key) == list(model.state_dict()) and max(by_key.values()) == n_levels - 1
