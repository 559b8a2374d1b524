"""A plans variant with another plans' batch size, for iteration budgets on CPUs.

nnU-Net's residual-encoder presets size the batch to a GPU's memory with no cap by dataset size (ResEnc M plans
batch 90 for PH2 at 4 mm), which at a fixed number of iterations shows that arm 20x more images than the others
and costs over a minute per iteration on two CPU cores. The study therefore trains ResEnc M with the batch size
of nnU-Net's default plans (same patch, same preprocessed data), as nnU-Net's documented way of editing a plans
file: a copy under a new plans name. The GPU command in README.md runs the presets unchanged.

    python results/label_efficiency/batch_matched_plans.py -d 506 -c 2d --source nnUNetResEncUNetMPlans_spacing4x4 \\
        --like nnUNetPlans_spacing4x4 --name nnUNetResEncUNetMPlans_bs4_spacing4x4
"""
import argparse
import json
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset-id", type=int, required=True)
    p.add_argument("-c", "--configuration", required=True)
    p.add_argument("--source", required=True, help="plans to copy")
    p.add_argument("--like", required=True, help="plans whose batch size the copy takes")
    p.add_argument("--name", required=True, help="plans name of the copy")
    args = p.parse_args(argv)
    root = os.environ.get("nnUNet_preprocessed") or sys.exit("export nnUNet_preprocessed first")
    folder = next((os.path.join(root, d) for d in sorted(os.listdir(root))
                   if d.startswith(f"Dataset{args.dataset_id:03d}_")), None) or sys.exit("dataset not planned")
    with open(os.path.join(folder, f"{args.source}.json")) as f:
        plans = json.load(f)
    with open(os.path.join(folder, f"{args.like}.json")) as f:
        batch = json.load(f)["configurations"][args.configuration]["batch_size"]
    config = plans["configurations"][args.configuration]
    print(f"{args.name}: {args.source} with batch {batch} (was {config['batch_size']}); preprocessed data shared "
          f"({config['data_identifier']})")
    config["batch_size"] = batch
    plans["plans_name"] = args.name
    out = os.path.join(folder, f"{args.name}.json")
    with open(out + ".partial", "w") as f:
        json.dump(plans, f, indent=1)
    os.replace(out + ".partial", out)


if __name__ == "__main__":
    main()
