"""Inflated 3D networks against nnU-Net's PlainConvUNet built from the same plan, in the same run.

For each plan and network: time of one training step (forward, nnU-Net's deep-supervision Dice+CE loss,
backward, SGD step), peak memory of that step, and the time of nnU-Net's sliding-window prediction with
its test-time mirroring (all three axes, 8 passes per tile). Every (plan, network) pair runs in a fresh
subprocess, so peak memory is that of one training step only (CPU: peak resident memory during the step
minus resident memory before it; CUDA: torch.cuda.max_memory_allocated minus memory allocated before).
Figures are also given as ratios to PlainConvUNet measured in the same run. EfficientNets (depthwise 3D
convolutions) get their own table, and a micro-benchmark says what a depthwise 3D convolution costs here.

    python results/benchmark_inflated/benchmark_inflated.py --out results/benchmark_inflated/report_cpu.md
    python results/benchmark_inflated/benchmark_inflated.py --device cuda --full-size \\
        --out results/benchmark_inflated/report_gpu.md

On CPU the plans are scaled down (see PLANS: `small`); strides, kernels and channel counts are the real plan's.
The inflation rule does not change shapes or cost, so networks use the default rule and normalisation.
"""
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from results.common import benchmark as bench  # noqa: E402

# nnU-Net-like 3d_fullres plans (results/common/benchmark.py)
PLANS = {"BraTS-like isotropic, 4 channels": bench.BRATS_LIKE_PLAN,
         "ACDC-like anisotropic, thin z": bench.acdc_like_plan(in_plane_stages=3)}
RESNETS = ["resnet18", "resnet34", "resnet50"]
EFFICIENTNETS = ["tf_efficientnet_lite0", "tf_efficientnet_b0"]


def worker(plan_name: str, net_name: str, device: str, full_size: bool, steps: int, threads: int) -> dict:
    import torch
    from nnunetv2_xdim.networks.plan import PlanArch, XDimArch
    from nnunetv2_xdim.networks.unet import build_network

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = PLANS[plan_name]
    pm, cm, patch = bench.plan_managers(spec, full_size)
    if net_name == bench.BASELINE:
        net = bench.nnunet_network(cm, spec)
    else:
        net = build_network(XDimArch(backbone=net_name, mode_3d="inflated"), PlanArch.from_configuration(cm),
                            spec["channels"], spec["classes"], True)
    # nnU-Net's sliding window with mirroring over a volume 1.5x the patch along x: 2 tiles x 8 mirrorings
    return bench.measure(net, spec, pm, cm, patch, device, steps, time.perf_counter, (0, 1, 2),
                   [*patch[:-1], int(patch[-1] * 1.5)])


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


def table(res: dict, base: dict) -> list:
    return bench.TABLE_HEAD + bench.table_rows(res, base, lambda n: n if n == bench.BASELINE else f"inflated {n}")


def main():
    args = bench.arguments(__doc__, PLANS, steps=3, threads=2).parse_args()
    if bench.run_as_worker(args, worker):
        return

    import torch
    from nnunetv2_xdim.networks.plan import XDimArch
    started = time.time()
    defaults = XDimArch()
    lines = [f"# Inflated 3D networks vs nnU-Net's PlainConvUNet ({args.device.upper()})", "",
             f"- machine: {bench.machine(args.device)}; torch {torch.__version__}, {args.threads} threads"
             + ("; the machine was shared with other jobs, so absolute times are noisy, ratios less so (same run)"
                if args.device == "cpu" else ""),
             f"- inflated networks: rule '{defaults.inflation}', encoder normalisation '{defaults.encoder_norm_3d}' "
             "(the defaults; the rule does not change cost); random weights (speed and memory do not depend on them)",
             f"- patches: {'real plan sizes' if args.full_size else 'scaled down for CPU (strides, kernels, channels of the real plan)'}; batch 2",
             bench.method_line(args),
             "- predict: nnU-Net's sliding window (step 0.5, Gaussian) with mirroring on all 3 axes, over a volume "
             "1.5x the patch along x (2 tiles x 8 mirrorings)",
             f"- command: `python results/benchmark_inflated/benchmark_inflated.py {' '.join(sys.argv[1:])}`", ""]
    for plan_name in args.plans:
        spec = PLANS[plan_name]
        res = {n: bench.run_worker(__file__, plan_name, n, args) for n in [bench.BASELINE] + RESNETS + EFFICIENTNETS}
        base = res[bench.BASELINE]
        lines += [f"## {plan_name}: patch {'x'.join(map(str, base['patch']))} (real plan "
                  f"{'x'.join(map(str, spec['patch']))}), {len(spec['strides'])} stages", "", "ResNet family:", ""]
        lines += table({n: res[n] for n in [bench.BASELINE] + RESNETS}, base)
        lines += ["", "EfficientNet family (depthwise 3D convolutions):", ""]
        lines += table({n: res[n] for n in [bench.BASELINE] + EFFICIENTNETS}, base) + [""]
        print("\n".join(lines[-14:]), flush=True)
    lines += [depthwise_micro(args.device, args.threads), ""]
    bench.write_report(lines, started, args.out)


if __name__ == "__main__":
    main()
