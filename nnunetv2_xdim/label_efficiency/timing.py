"""A quick timing of one training iteration of an arm's network, for --dry-run's estimate before any run finished.

It builds the network as nnU-Net would (the trainer's build_network_architecture on the plans) and times
forward + backward + an optimiser step on one batch of the plan's size. Data loading, augmentation, validation
and prediction are not in it, so the estimate is a lower bound; once a run of the arm has finished, its measured
time replaces it.
"""
import contextlib
import io
import json
import os
import time
from typing import Optional


def seconds_per_iteration(study, trainer: str, plans: str, steps: int = 3) -> Optional[float]:
    plans_file = os.path.join(study.preprocessed, f"{plans}.json")
    if not os.path.isfile(plans_file):
        return None
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    with open(plans_file) as f:
        plans_manager = PlansManager(json.load(f))
    config = plans_manager.get_configuration(study.configuration)
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates the trainer search
        cls = recursive_find_trainer_class_by_name(trainer)
    channels = determine_num_input_channels(plans_manager, config, study.dataset_json)
    heads = plans_manager.get_label_manager(study.dataset_json).num_segmentation_heads
    device = torch.device(study.device)
    net = cls.build_network_architecture(plans_manager, config, channels, heads, True).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(config.batch_size, channels, *config.patch_size, device=device)

    def step():
        optimizer.zero_grad()
        out = net(x)
        loss = sum(o.float().mean() for o in (out if isinstance(out, (list, tuple)) else [out]))
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    start = time.time()
    for _ in range(steps):
        step()
    return (time.time() - start) / steps
