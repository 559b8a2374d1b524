"""What the benchmark scripts share: one (plan, network) measurement in a fresh subprocess against nnU-Net's own
PlainConvUNet on the same plan, the machine line and the table of ratios.

A worker measures one network: time of one training step (forward, nnU-Net's deep-supervision Dice+CE loss,
backward, SGD step), peak memory of that step, and the time of nnU-Net's sliding-window prediction. Running every
pair in its own process keeps peak memory that of one training step only (CPU: peak resident memory during the
step minus resident memory before it; CUDA: torch.cuda.max_memory_allocated minus memory allocated before).
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

BASELINE = "PlainConvUNet (nnU-Net)"
# an nnU-Net-like 3d_fullres plan: real patch, CPU patch ("small"), input channels, classes, strides, kernels
BRATS_LIKE_PLAN = dict(patch=[128, 128, 128], small=[64, 64, 64], channels=4, classes=4,
                       strides=[[1, 1, 1]] + [[2, 2, 2]] * 5, kernels=[[3, 3, 3]] * 6)


def acdc_like_plan(in_plane_stages: int) -> dict:
    """A cine-MRI-like plan of 10 slices, never downsampled in z, whose first `in_plane_stages` kernels are 1x3x3."""
    return dict(patch=[10, 256, 224], small=[10, 128, 96], channels=1, classes=4,
                strides=[[1, 1, 1]] + [[1, 2, 2]] * 5,
                kernels=[[1, 3, 3]] * in_plane_stages + [[3, 3, 3]] * (6 - in_plane_stages))
TABLE_HEAD = ["| network | params (M) | train step (s) | ratio | peak memory (MB) | ratio | predict (s) | ratio |",
              "|---|---|---|---|---|---|---|---|"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def arguments(doc: str, plans: dict, steps: int, threads: int, threads_help: str = "torch threads (CPU)"):
    """The options every benchmark script takes (add its own before parse_args)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, metavar=("PLAN", "NETWORK"), help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--full-size", action="store_true", help="real patch sizes instead of the scaled-down ones")
    ap.add_argument("--steps", type=int, default=steps, help="timed training steps (median reported)")
    ap.add_argument("--threads", type=int, default=threads, help=threads_help)
    ap.add_argument("--plans", nargs="*", default=list(plans), help="subset of plan names")
    ap.add_argument("--out", default=None, help="markdown file to write (default: print)")
    return ap


def run_as_worker(args, worker: Callable[..., dict]) -> bool:
    """With --worker PLAN NETWORK: measure that pair, print the result as the last stdout line, return True."""
    if args.worker:
        print(json.dumps(worker(*args.worker, args.device, args.full_size, args.steps, args.threads)))
    return bool(args.worker)


def plan_managers(spec: dict, full_size: bool):
    """nnU-Net's plans and configuration managers for a PLANS entry (real or CPU-sized patch), and the patch."""
    from tests.plans_util import managers
    patch = spec["patch"] if full_size else spec["small"]
    pm, cm = managers(patch, spec["strides"], kernels=spec["kernels"], batch_size=2)
    return pm, cm, patch


def nnunet_network(cm, spec: dict):
    """nnU-Net's own network for the configuration, as its trainer builds it (deep supervision on)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    return get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                  cm.network_arch_init_kwargs_req_import, spec["channels"], spec["classes"],
                                  deep_supervision=True)


def measure(net, spec: dict, pm, cm, patch: Sequence[int], device: str, steps: int, clock: Callable[[], float],
            mirror_axes: Optional[tuple], volume_shape: Sequence[int]) -> dict:
    """Train-step time (median of `steps` after a first step), the first step's peak memory and the time of
    nnU-Net's sliding-window prediction (step 0.5, Gaussian, `mirror_axes`) of one volume of `volume_shape`."""
    import numpy as np
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    dev = torch.device(device)
    net = net.to(dev).train()
    params = sum(p.numel() for p in net.parameters())

    n_ds = len(spec["strides"]) - 1
    w = np.array([1 / 2 ** i for i in range(n_ds)])
    w[-1] = 0  # as nnUNetTrainer: the lowest resolution gets no loss
    loss_fn = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                                    {}, weight_ce=1, weight_dice=1,
                                                    dice_class=MemoryEfficientSoftDiceLoss), w / w.sum())
    opt = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True)
    x = torch.randn(2, spec["channels"], *patch, device=dev)
    scales = np.cumprod(np.array(spec["strides"]), axis=0)[:-1]
    targets = [torch.randint(0, spec["classes"], (2, 1, *[p // s for p, s in zip(patch, sc)]), device=dev)
               for sc in scales]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), targets).backward()
        opt.step()

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        import gc
        gc.collect()
        base = _rss_mb()
    step()  # the first step: its peak memory is reported, its time is not (allocator and kernel warm-up)
    sync()
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if dev.type == "cuda" else _peak_rss_mb() - base
    times = []
    for _ in range(steps):
        t = clock()
        step()
        sync()
        times.append(clock() - t)

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror_axes is not None,
                                device=dev, perform_everything_on_device=dev.type == "cuda", allow_tqdm=False)
    dataset_json = {"labels": {"background": 0, **{f"c{i}": i for i in range(1, spec["classes"])}},
                    "channel_names": {str(i): "x" for i in range(spec["channels"])}, "file_ending": ".nii.gz"}
    net.decoder.deep_supervision = False  # as the predictor runs it
    predictor.manual_initialization(net, pm, cm, None, dataset_json, "benchmark", mirror_axes)
    volume = torch.randn(spec["channels"], *volume_shape)
    sync()
    t = clock()
    predictor.predict_sliding_window_return_logits(volume)
    sync()
    return {"train_step_s": float(np.median(times)), "peak_mb": peak, "predict_s": clock() - t,
            "params_m": params / 1e6, "patch": list(patch)}


def run_worker(script: str, plan_name: str, net_name: str, args) -> dict:
    """`script --worker PLAN NETWORK ...` in a fresh process; its last stdout line is the measurement (JSON)."""
    cmd = [sys.executable, script, "--worker", plan_name, net_name, "--device", args.device,
           "--steps", str(args.steps), "--threads", str(args.threads)] + (["--full-size"] if args.full_size else [])
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{plan_name} / {net_name} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def machine(device: str) -> str:
    import torch
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores"


def method_line(args) -> str:
    """How the train step and its peak memory are measured (the report's method bullet)."""
    peak = ("max_memory_allocated" if args.device == "cuda"
            else "peak resident memory minus resident memory before the step")
    return ("- train step: forward + nnU-Net's deep-supervision Dice+CE loss + backward + SGD step, median of "
            f"{args.steps} after a first step; peak memory: of that first step ({peak})")


def table_rows(res: dict, base: dict, label: Callable[[str], str] = str, predict_digits: int = 1) -> list:
    """One markdown row per network, each figure also as a ratio to `base` (nnU-Net's network, same run)."""
    rows = []
    for n, r in res.items():
        rows.append(f"| {label(n)} | {r['params_m']:.1f} | {r['train_step_s']:.2f} | "
                    f"{r['train_step_s'] / base['train_step_s']:.2f} | {r['peak_mb']:.0f} | "
                    f"{r['peak_mb'] / base['peak_mb']:.2f} | {r['predict_s']:.{predict_digits}f} | "
                    f"{r['predict_s'] / base['predict_s']:.2f} |")
    return rows


def write_report(lines: list, started: float, out: Optional[str]) -> None:
    lines.append(f"Total benchmark time: {(time.time() - started) / 60:.1f} min.")
    text = "\n".join(lines) + "\n"
    if out:
        with open(out, "w") as f:
            f.write(text)
    print(text)
