"""Inflated 3D networks against nnU-Net's PlainConvUNet built from the same plan, in the same run.

For each plan and network: time of one training step (forward, nnU-Net's deep-supervision Dice+CE loss,
backward, SGD step), peak memory of that step, and the time of nnU-Net's sliding-window prediction with
its test-time mirroring (all three axes, 8 passes per tile). Every (plan, network) pair runs in a fresh
subprocess, so peak memory is that of one training step only (CPU: peak resident memory during the step
minus resident memory before it; CUDA: torch.cuda.max_memory_allocated minus memory allocated before).
Figures are also given as ratios to PlainConvUNet measured in the same run. EfficientNets (depthwise 3D
convolutions) get their own table, and a micro-benchmark says what a depthwise 3D convolution costs here.

    python results/benchmark_inflated.py --out results/benchmark_inflated_cpu.md
    python results/benchmark_inflated.py --device cuda --full-size --out results/benchmark_inflated_gpu.md

On CPU the plans are scaled down (see PLANS: `small`); strides, kernels and channel counts are the real plan's.
The inflation rule does not change shapes or cost, so networks use the default rule and normalisation.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# nnU-Net-like 3d_fullres plans: real patch, CPU patch ("small"), strides, kernels, channels, classes
PLANS = {
    "BraTS-like isotropic, 4 channels": dict(
        patch=[128, 128, 128], small=[64, 64, 64], channels=4, classes=4,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * 5, kernels=[[3, 3, 3]] * 6),
    "ACDC-like anisotropic, thin z": dict(
        patch=[10, 256, 224], small=[10, 128, 96], channels=1, classes=4,
        strides=[[1, 1, 1]] + [[1, 2, 2]] * 5, kernels=[[1, 3, 3]] * 3 + [[3, 3, 3]] * 3),
}
BASELINE = "PlainConvUNet (nnU-Net)"
RESNETS = ["resnet18", "resnet34", "resnet50"]
EFFICIENTNETS = ["tf_efficientnet_lite0", "tf_efficientnet_b0"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def worker(plan_name: str, net_name: str, device: str, full_size: bool, steps: int, threads: int) -> dict:
    import numpy as np
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunetv2_xdim.networks.plan import PlanArch, XDimArch
    from nnunetv2_xdim.networks.unet import build_network
    from tests.plans_util import managers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = PLANS[plan_name]
    patch = spec["patch"] if full_size else spec["small"]
    pm, cm = managers(patch, spec["strides"], kernels=spec["kernels"], batch_size=2)
    dev = torch.device(device)
    if net_name == BASELINE:
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, spec["channels"], spec["classes"],
                                     deep_supervision=True)
    else:
        net = build_network(XDimArch(backbone=net_name, mode_3d="inflated"), PlanArch.from_configuration(cm),
                            spec["channels"], spec["classes"], True)
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
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)

    # nnU-Net's sliding window with mirroring over a volume 1.5x the patch along x: 2 tiles x 8 mirrorings
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True, device=dev,
                                perform_everything_on_device=dev.type == "cuda", allow_tqdm=False)
    dataset_json = {"labels": {"background": 0, **{f"c{i}": i for i in range(1, spec["classes"])}},
                    "channel_names": {str(i): "x" for i in range(spec["channels"])}, "file_ending": ".nii.gz"}
    net.decoder.deep_supervision = False
    predictor.manual_initialization(net, pm, cm, None, dataset_json, "benchmark", (0, 1, 2))
    volume = torch.randn(spec["channels"], *patch[:-1], int(patch[-1] * 1.5))
    sync()
    t = time.perf_counter()
    predictor.predict_sliding_window_return_logits(volume)
    sync()
    predict_s = time.perf_counter() - t
    return {"train_step_s": float(np.median(times)), "peak_mb": peak, "predict_s": predict_s,
            "params_m": params / 1e6, "patch": patch}


def depthwise_micro(device: str, threads: int) -> str:
    """Forward+backward time of a depthwise 3x3x3 convolution against a dense 1x1x1 one on the same tensor."""
    import torch
    torch.set_num_threads(threads)
    dev = torch.device(device)
    c, size = 96, (16, 32, 32)
    x = torch.randn(2, c, *size, device=dev, requires_grad=True)
    convs = {"depthwise 3x3x3": torch.nn.Conv3d(c, c, 3, padding=1, groups=c),
             "dense 1x1x1": torch.nn.Conv3d(c, c, 1), "dense 3x3x3": torch.nn.Conv3d(c, c, 3, padding=1)}
    res = {}
    for name, conv in convs.items():
        conv = conv.to(dev)
        conv(x).sum().backward()
        t = time.perf_counter()
        for _ in range(3):
            conv(x).sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        s = (time.perf_counter() - t) / 3
        macs = conv.weight.numel() * size[0] * size[1] * size[2] * 2  # batch 2
        res[name] = (s, 3 * macs / s / 1e9)  # forward + 2 backward products
    rows = [f"| {n} | {s * 1e3:.1f} | {g:.1f} |" for n, (s, g) in res.items()]
    return "\n".join([f"Micro-benchmark, batch 2 of {c} channels x {'x'.join(map(str, size))}, forward + backward:", "",
                      "| convolution | time (ms) | G multiply-adds / s |", "|---|---|---|"] + rows)


def run_worker(plan_name, net_name, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", plan_name, net_name, "--device", args.device,
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


def table(res: dict, base: dict) -> list:
    lines = ["| network | params (M) | train step (s) | ratio | peak memory (MB) | ratio | predict (s) | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for n, r in res.items():
        label = n if n == BASELINE else f"inflated {n}"
        lines.append(f"| {label} | {r['params_m']:.1f} | {r['train_step_s']:.2f} | {r['train_step_s'] / base['train_step_s']:.2f} "
                     f"| {r['peak_mb']:.0f} | {r['peak_mb'] / base['peak_mb']:.2f} | {r['predict_s']:.1f} "
                     f"| {r['predict_s'] / base['predict_s']:.2f} |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, metavar=("PLAN", "NETWORK"), help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--full-size", action="store_true", help="real patch sizes instead of the scaled-down ones")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plans", nargs="*", default=list(PLANS), help="subset of plan names")
    ap.add_argument("--out", default=None, help="markdown file to write (default: print)")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.device, args.full_size, args.steps, args.threads)))
        return

    import torch
    from nnunetv2_xdim.networks.plan import XDimArch
    started = time.time()
    defaults = XDimArch()
    lines = [f"# Inflated 3D networks vs nnU-Net's PlainConvUNet ({args.device.upper()})", "",
             f"- machine: {machine(args.device)}; torch {torch.__version__}, {args.threads} threads"
             + ("; the machine was shared with other jobs, so absolute times are noisy, ratios less so (same run)"
                if args.device == "cpu" else ""),
             f"- inflated networks: rule '{defaults.inflation}', encoder normalisation '{defaults.encoder_norm_3d}' "
             "(the defaults; the rule does not change cost); random weights (speed and memory do not depend on them)",
             f"- patches: {'real plan sizes' if args.full_size else 'scaled down for CPU (strides, kernels, channels of the real plan)'}; batch 2",
             "- train step: forward + nnU-Net's deep-supervision Dice+CE loss + backward + SGD step, median of "
             f"{args.steps} after a first step; peak memory: of that first step "
             f"({'max_memory_allocated' if args.device == 'cuda' else 'peak resident memory minus resident memory before the step'})",
             "- predict: nnU-Net's sliding window (step 0.5, Gaussian) with mirroring on all 3 axes, over a volume "
             "1.5x the patch along x (2 tiles x 8 mirrorings)",
             f"- command: `python results/benchmark_inflated.py {' '.join(sys.argv[1:])}`", ""]
    for plan_name in args.plans:
        spec = PLANS[plan_name]
        res = {n: run_worker(plan_name, n, args) for n in [BASELINE] + RESNETS + EFFICIENTNETS}
        base = res[BASELINE]
        lines += [f"## {plan_name}: patch {'x'.join(map(str, base['patch']))} (real plan "
                  f"{'x'.join(map(str, spec['patch']))}), {len(spec['strides'])} stages", "", "ResNet family:", ""]
        lines += table({n: res[n] for n in [BASELINE] + RESNETS}, base)
        lines += ["", "EfficientNet family (depthwise 3D convolutions):", ""]
        lines += table({n: res[n] for n in [BASELINE] + EFFICIENTNETS}, base) + [""]
        print("\n".join(lines[-14:]), flush=True)
    lines += [depthwise_micro(args.device, args.threads), "",
              f"Total benchmark time: {(time.time() - started) / 60:.1f} min."]
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
