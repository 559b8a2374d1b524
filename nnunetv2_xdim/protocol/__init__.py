"""The paper's protocol, `nnunetv2_xdim_protocol`: one command per challenge that converts, plans, trains, picks,
predicts, exports, evaluates and reports, each step one console command a user could type.

    challenges.py     the challenges as data: datasets, trainers, converter / exporter / preset, their hooks
    published.py      what the publications report, as data
    settings.py       a run's settings and the environment of every command
    trainer_names.py  the baseline, the EfficientNet-Lite stand-ins, the name check
    runner.py         steps as commands: printed, skipped or run (logged) through nnunetv2_xdim.commands
    steps.py          the steps and their rerun rules (class Protocol)
    report.py         report.md and commands.sh
    cli.py            the command line
"""
from .challenges import CHALLENGES, Challenge, DatasetSpec
from .cli import build_parser, main, settings_from_args
from .runner import Runner, Step
from .settings import ProtocolError, Settings
from .steps import Protocol
from .trainer_names import BASELINE, STAND_INS, check_trainer_names, stand_in_trainer

__all__ = ["BASELINE", "CHALLENGES", "STAND_INS", "Challenge", "DatasetSpec", "Protocol", "ProtocolError", "Runner",
           "Settings", "Step", "build_parser", "check_trainer_names", "main", "settings_from_args",
           "stand_in_trainer"]
