"""Label-efficiency studies: each trainer's test Dice against the number of labelled training cases, through
nnU-Net's own commands (see cli.py for the command `nnunetv2_xdim_label_efficiency`)."""
