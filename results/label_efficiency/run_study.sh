#!/usr/bin/env bash
# The label-efficiency study as it ran on 2 CPU cores: every command, in order. Each step resumes where it
# stopped (a rerun trains nothing that is finished).
#
#   bash results/label_efficiency/run_study.sh DATA WORK
#
# DATA holds ph2_dev/, busi_dev/, hippocampus_dev/ (images/ + masks/ or labels/); WORK receives nnU-Net's folders
# and the study folders. Outputs to commit: WORK/<study>/{runs.csv,cases.csv,summary.md,dice_vs_n.png}.
set -euo pipefail
DATA=$(realpath "$1"); WORK=$(realpath -m "$2"); HERE=$(dirname "$(realpath "$0")")
mkdir -p "$WORK"/{raw,pre,res}
export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/pre nnUNet_results=$WORK/res
export HF_HUB_OFFLINE=1 nnUNet_n_proc_DA=0 nnUNet_def_n_proc=1 nnUNet_compile=f
export OMP_WAIT_POLICY=PASSIVE  # two trainings side by side on two cores: idle OpenMP threads sleep
export nnUNet_extTrainer="$(nnunetv2_xdim_ext_trainer --folder):$HERE/trainers"

# budget for every arm: 20 epochs x 25 iterations (500), 3 validation iterations per epoch
BUDGET=(--epochs 20 --iterations 25 --val-iterations 3 -np 2)
LITE=(nnUNetTrainerXDimEfficientNetLite0 nnUNetTrainerXDimEfficientNetLite0_Scratch nnUNetTrainerXDimBaseline)

# --- data: our converters for PH2 and BUSI; the hippocampus copy lacks the MSD release's dataset.json
[ -d "$WORK/raw/Dataset506_PH2" ] || nnunetv2_xdim_convert_ph2 -i "$DATA/ph2_dev" -np 2
[ -d "$WORK/raw/Dataset507_BUSI" ] || nnunetv2_xdim_convert_busi -i "$DATA/busi_dev" -np 2
[ -d "$WORK/raw/Dataset508_Hippocampus" ] || python "$HERE/prepare_hippocampus.py" "$DATA/hippocampus_dev" -d 508

# --- PH2 (2d at 4 mm: about 144 x 192 px): test set and plans first, then nnU-Net's ResEnc M at the default
# plans' batch size (see batch_matched_plans.py), then the input-scaling decision on the pool, then all arms
PH2=(-d 506 -c 2d -o "$WORK/ph2" --sizes 5 10 20 60 --repeats 3 3 2 1 --target-spacing 4 4 "${BUDGET[@]}")
nnunetv2_xdim_label_efficiency "${PH2[@]}" --test-size 40 -tr nnUNetTrainerXDimBaseline \
    --arm nnUNetTrainerXDimBaseline:nnUNetResEncUNetMPlans@10,60 --max-runs 0
[ -f "$WORK/pre/Dataset506_PH2/nnUNetResEncUNetMPlans_bs4_spacing4x4.json" ] || \
    python "$HERE/batch_matched_plans.py" -d 506 -c 2d --source nnUNetResEncUNetMPlans_spacing4x4 \
        --like nnUNetPlans_spacing4x4 --name nnUNetResEncUNetMPlans_bs4_spacing4x4
python "$HERE/input_norm_cv.py" -d 506 --pool-id 516 -o "$WORK/input_norm_ph2" --target-spacing 4 4 \
    --epochs 20 --iterations 25 --val-iterations 3 \
    -tr nnUNetTrainerXDimEfficientNetLite0_InputNormNone nnUNetTrainerXDimEfficientNetLite0_InputNormBackbone
nnunetv2_xdim_label_efficiency "${PH2[@]}" -tr "${LITE[@]}" \
    --arm nnUNetTrainerXDimBaseline:nnUNetResEncUNetMPlans_bs4@10,60

# --- Hippocampus (3d_fullres at its native 1 mm), with the slice-wise and stacked modes at N = 10
nnunetv2_xdim_label_efficiency -d 508 -c 3d_fullres -o "$WORK/hippocampus" --test-size 50 \
    --sizes 5 10 25 80 --repeats 3 3 2 1 "${BUDGET[@]}" -tr "${LITE[@]}" \
    --arm nnUNetTrainerXDimEfficientNetLite0_SliceWise@10 --arm nnUNetTrainerXDimEfficientNetLite0_SliceWise_Scratch@10 \
    --arm nnUNetTrainerXDimEfficientNetLite0_Stacked@10 --arm nnUNetTrainerXDimEfficientNetLite0_Stacked_Scratch@10

# --- BUSI (2d at 4 mm), test set stratified by class (benign / malignant / normal, from case_info.json)
nnunetv2_xdim_label_efficiency -d 507 -c 2d -o "$WORK/busi" --test-size 189 --sizes 10 25 100 200 \
    --repeats 3 3 2 1 --target-spacing 4 4 "${BUDGET[@]}" -tr "${LITE[@]}"
