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
