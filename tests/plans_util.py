"""Plan structures for tests: what nnU-Net writes into nnUNetPlans.json, without running the planner."""
from typing import Sequence

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_xdim.networks.plan import PlanArch


def configuration_dict(patch_size: Sequence[int], strides, kernels=None, features=None, residual: bool = False,
                       batch_size: int = 2) -> dict:
    """An nnU-Net configuration entry ('2d' / '3d_fullres') with the given architecture."""
    dim = len(patch_size)
    n = len(strides)
    kernels = kernels or [[3] * dim] * n
    features = features or [min(32 * 2 ** i, 512 if dim == 2 else 320) for i in range(n)]
    conv = "torch.nn.modules.conv.Conv%dd" % dim
    norm = "torch.nn.modules.instancenorm.InstanceNorm%dd" % dim
    kwargs = {"n_stages": n, "features_per_stage": features, "conv_op": conv, "kernel_sizes": [list(k) for k in kernels],
              "strides": [list(s) for s in strides], "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
              "norm_op": norm, "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
              "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    if residual:
        kwargs["n_blocks_per_stage"] = [1, 3, 4, 6, 6, 6, 6, 6][:n]
        name = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    else:
        kwargs["n_conv_per_stage"] = [2] * n
        name = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    return {"data_identifier": f"nnUNetPlans_{dim}d", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": batch_size, "patch_size": list(patch_size), "median_image_size_in_voxels": list(patch_size),
            "spacing": [1.0] * dim, "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "architecture": {"network_class_name": name, "arch_kwargs": kwargs,
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}


def plans_dict(config_name: str, configuration: dict) -> dict:
    return {"dataset_name": "Dataset999_Test", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1, 1],
            "original_median_shape_after_transp": [64, 64, 64], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {config_name: configuration}, "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {}}


def managers(patch_size, strides, **kw):
    """(PlansManager, ConfigurationManager) for a synthetic plan."""
    name = "2d" if len(patch_size) == 2 else "3d_fullres"
    pm = PlansManager(plans_dict(name, configuration_dict(patch_size, strides, **kw)))
    return pm, pm.get_configuration(name)


def plan_arch(patch_size, strides, **kw) -> PlanArch:
    return PlanArch.from_configuration(managers(patch_size, strides, **kw)[1])
