"""The hippocampus dev copy (images/ + labels/, no dataset.json) as an nnU-Net raw dataset.

Users of the Medical Segmentation Decathlon release convert it with nnU-Net's own command
(`nnUNetv2_convert_MSD_dataset -i Task04_Hippocampus`); the copy used in this study lacks the release's
dataset.json, so this writes the same dataset: one MRI channel (z-score), labels anterior 1 / posterior 2.

    python results/label_efficiency/prepare_hippocampus.py HIPPOCAMPUS_DIR [-d 508]
"""
import argparse
import json
import os
import shutil
import sys

import SimpleITK as sitk


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="holds images/hippocampus_NNN.nii.gz and labels/hippocampus_NNN.nii.gz")
    p.add_argument("-d", "--dataset-id", type=int, default=508)
    args = p.parse_args(argv)
    raw = os.environ.get("nnUNet_raw") or sys.exit("export nnUNet_raw first")
    out = os.path.join(raw, f"Dataset{args.dataset_id:03d}_Hippocampus")
    if os.path.exists(out):
        sys.exit(f"{out} exists: remove it to convert again")
    cases = sorted(f[:-len(".nii.gz")] for f in os.listdir(os.path.join(args.folder, "labels")) if f.endswith(".nii.gz"))
    if not cases:
        sys.exit(f"no labels/*.nii.gz in {args.folder}")
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(tmp, sub))
    for case in cases:
        image = sitk.ReadImage(os.path.join(args.folder, "images", case + ".nii.gz"), sitk.sitkFloat32)
        label = sitk.ReadImage(os.path.join(args.folder, "labels", case + ".nii.gz"), sitk.sitkUInt8)
        if image.GetSize() != label.GetSize():
            sys.exit(f"{case}: image size {image.GetSize()} differs from label size {label.GetSize()}")
        label.CopyInformation(image)
        sitk.WriteImage(image, os.path.join(tmp, "imagesTr", f"{case}_0000.nii.gz"))
        sitk.WriteImage(label, os.path.join(tmp, "labelsTr", f"{case}.nii.gz"))
    with open(os.path.join(tmp, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
                   "numTraining": len(cases), "file_ending": ".nii.gz", "name": "Hippocampus",
                   "description": "Medical Segmentation Decathlon Task04 (dev half), CC BY-SA 4.0"}, f, indent=1)
    os.replace(tmp, out)
    print(f"wrote {out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
