"""Dimensional transfer: pretrained 2D timm backbones as 3D encoders that follow nnU-Net's plans.

`inflate_backbone` is the public entry point; `RULES` holds the inflation rules ('centre', 'i3d');
`SUPPORTED_FAMILIES` says which timm families it converts (others raise `UnsupportedBackboneError`)::

    from nnunetv2_xdim.backbones.timm_backbone import create_features_model
    from nnunetv2_xdim.transfer import inflate_backbone

    m2d = create_features_model("resnet34", in_chans=1, n_levels=5, pretrained=True)
    m3d = inflate_backbone(m2d, depth_kernels=[1, 1, 3, 3, 3],
                           strides=[(1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)], rule="centre")
    features = m3d(torch.randn(2, 1, 20, 256, 224))  # 5 maps, (20, 128, 112) ... (5, 8, 7)
"""
from .convert import SUPPORTED_FAMILIES, UnsupportedBackboneError
from .inflate import inflate_backbone
from .rules import RULES, centre, get_rule, i3d

__all__ = ["inflate_backbone", "RULES", "centre", "i3d", "get_rule", "SUPPORTED_FAMILIES",
           "UnsupportedBackboneError"]
