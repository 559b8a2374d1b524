"""The protocol's steps as commands: printed (dry runs), skipped with a reason, or run through the project's
shared command runner with one log per step. The steps are kept for the report and commands.sh."""
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ..commands import CommandError, run_logged, shell_line
from .settings import ProtocolError


@dataclass
class Step:
    title: str
    cmd: List[str]
    env: Dict[str, str]  # only the variables this step sets on top of the protocol's environment
    status: str = "planned"  # planned / ran / skipped / printed / comment / failed (N)
    seconds: float = 0.0
    note: str = ""
    unset: Sequence[str] = ()  # variables removed from the environment for this step

    def line(self) -> str:
        return shell_line(self.cmd, self.env, self.unset)


class Runner:
    def __init__(self, base_env: Dict[str, str], log_dir: Optional[str], dry_run: bool):
        self.base_env, self.log_dir, self.dry_run = base_env, log_dir, dry_run
        self.steps: List[Step] = []

    def skip(self, title: str, cmd: List[str], reason: str, env=None) -> None:
        step = Step(title, cmd, env or {}, "skipped", note=reason)
        self.steps.append(step)
        print(f"\n### {title}: skipped ({reason})\n#   {shell_line(cmd, env)}", flush=True)

    def comment(self, text: str) -> None:
        self.steps.append(Step(text, [], {}, "comment"))
        print("\n" + "\n".join("# " + line for line in text.splitlines()), flush=True)

    def run(self, title: str, cmd: List[str], env: Optional[Dict[str, str]] = None,
            unset: Sequence[str] = ()) -> None:
        step = Step(title, [str(c) for c in cmd], dict(env or {}), unset=tuple(unset))
        self.steps.append(step)
        line = step.line()
        if self.dry_run:
            step.status = "printed"
            print(f"\n### {title}\n{line}", flush=True)
            return
        print(f"\n### {title}\n$ {line}", flush=True)
        full_env = dict(self.base_env, **step.env)
        for u in unset:
            full_env.pop(u, None)
        log_path = os.path.join(self.log_dir, f"{len(self.steps):02d}_{re.sub(r'[^A-Za-z0-9]+', '_', title)[:60]}.log")
        try:
            step.seconds = run_logged(step.cmd, full_env, log_path, title=f"step '{title}'", line=line, append=False)
        except CommandError as e:
            step.status = "failed" if e.returncode is None else f"failed ({e.returncode})"
            raise ProtocolError(str(e)) from None
        step.status = "ran"
