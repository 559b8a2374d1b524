"""nnunetv2-xdim: ImageNet-pretrained 2D encoders for nnU-Net v2, in 2D and 3D."""
__version__ = "0.1.0"
