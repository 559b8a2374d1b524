"""Make nnU-Net's own commands find the XDim trainers (nnU-Net's `nnUNet_extTrainer` mechanism, >= 2.8.0).

nnU-Net looks a trainer name up in its own tree first, then in each folder of the environment variable
`nnUNet_extTrainer`. Prediction looks the name up again (from the checkpoint), so the variable must be set
wherever a model is trained *or* used.
"""
import argparse
import os

import nnunetv2_xdim.ext_trainers as _ext

ENV = "nnUNet_extTrainer"


def ext_trainer_folder() -> str:
    """The folder to put into nnUNet_extTrainer."""
    return os.path.dirname(os.path.abspath(_ext.__file__))


def is_enabled(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    paths = [os.path.abspath(p) for p in environ.get(ENV, "").split(os.pathsep) if p.strip()]
    return ext_trainer_folder() in paths


def enable_trainer_discovery(environ=None) -> str:
    """Add our folder to nnUNet_extTrainer in `environ` (default: this process, inherited by subprocesses).

    Note: nnunetv2.paths reads the variable when it is first imported; call this before importing nnunetv2
    modules in the same process, or run nnU-Net's commands as subprocesses.
    """
    environ = os.environ if environ is None else environ
    if not is_enabled(environ):
        current = [p for p in environ.get(ENV, "").split(os.pathsep) if p.strip()]
        environ[ENV] = os.pathsep.join(current + [ext_trainer_folder()])
    return environ[ENV]


def export_line(shell: str = "sh") -> str:
    folder = ext_trainer_folder()
    if shell == "fish":
        return f'set -gx {ENV} "{folder}"'
    if shell in ("cmd", "bat"):
        return f'set {ENV}={folder}'
    if shell == "powershell":
        return f'$env:{ENV} = "{folder}"'
    return f'export {ENV}="{folder}"'


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Print the line that lets nnU-Net's commands (nnUNetv2_train, nnUNetv2_predict, ...) find the "
                    "XDim trainers. Use: eval \"$(nnunetv2_xdim_ext_trainer)\", or add the line to ~/.bashrc.")
    parser.add_argument("--shell", default="sh", choices=["sh", "fish", "cmd", "powershell"])
    parser.add_argument("--folder", action="store_true", help="print only the folder")
    args = parser.parse_args(argv)
    print(ext_trainer_folder() if args.folder else export_line(args.shell))


if __name__ == "__main__":
    main()
