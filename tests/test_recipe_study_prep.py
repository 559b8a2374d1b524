"""results/recipe_study.py prepares its datasets once and reuses them; a preparation killed midway must not be
reused as if complete (training would silently run on fewer cases)."""
import importlib.util
import os

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

HERE = os.path.dirname(os.path.abspath(__file__))


def load_recipe_study():
    spec = importlib.util.spec_from_file_location(
        "recipe_study", os.path.join(HERE, "..", "results", "recipe_study.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interrupted_preprocessing_is_detected(tmp_path):
    study = load_recipe_study()
    cases = ["case_a", "case_b", "case_c"]
    data_dir = tmp_path / "nnUNetPlans_3d_fullres"
    assert study.missing_preprocessed_cases(str(data_dir), cases) == cases  # never preprocessed
    data_dir.mkdir()
    for case in cases:  # what nnU-Net's preprocessing writes per case: two arrays, then the .pkl
        nnUNetDatasetBlosc2.save_case(np.zeros((1, 4, 8, 8), np.float32), np.zeros((1, 4, 8, 8), np.int16),
                                      {"spacing": [1, 1, 1]}, str(data_dir / case))
    assert study.missing_preprocessed_cases(str(data_dir), cases) == []
    # killed while writing case_b: its arrays may be there, its properties are not yet
    os.remove(data_dir / "case_b.pkl")
    os.remove(data_dir / "case_c_seg.b2nd")
    assert study.missing_preprocessed_cases(str(data_dir), cases) == ["case_b", "case_c"]
