"""Running console commands (nnU-Net's and ours) as subprocesses: one log per command, progress shown as it
goes, a failure reported with the command and the tail of its output.

Everything the project orchestrates (the demo, the paper's protocol, the label-efficiency command) runs nnU-Net
through its own console commands rather than behind its back, so that every step can be repeated by hand.
"""
import collections
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Callable, Dict, Optional, Sequence


class CommandError(Exception):
    """A command failed or could not start; the message names it and shows the end of its output.
    `returncode` is the command's exit status (None: it did not start)."""

    def __init__(self, message: str, returncode: Optional[int] = None):
        super().__init__(message)
        self.returncode = returncode


def _quote(arg: str) -> str:
    # printed lines without nnU-Net's variables show "$nnUNet_raw/...", so that a copied line still expands them
    if "$nnUNet_" in arg and re.fullmatch(r"[\w$/.=:@%+,-]+", arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def shell_line(cmd: Sequence[str], env: Optional[Dict[str, str]] = None, unset: Sequence[str] = ()) -> str:
    """The command as one shell line, with the variables it sets (and removes) in front."""
    prefix = " ".join(f"{k}={_quote(str(v))}" for k, v in (env or {}).items())
    line = (prefix + " " if prefix else "") + " ".join(_quote(str(c)) for c in cmd)
    return ("env " + " ".join(f"-u {u}" for u in unset) + " " + line) if unset else line


def run_logged(cmd: Sequence[str], env: Dict[str, str], log_path: str,
               show: Callable[[str], bool] = lambda line: True, indent: str = "", title: str = "",
               line: Optional[str] = None, append: bool = True) -> float:
    """Run `cmd` with the full environment `env`; every output line goes to `log_path`, the lines `show` accepts
    to stdout as they come. Returns the wall time in seconds; raises CommandError on failure.

    `line` is how the log and an error show the command (default: `shell_line(cmd)`; callers that print it
    with its variables pass that line); `append=False` starts the log anew."""
    cmd = [str(c) for c in cmd]
    what = title or cmd[0]
    line = shell_line(cmd) if line is None else line
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    tail = collections.deque(maxlen=40)
    start = time.time()
    # unbuffered: a long training shows its progress as it goes
    env = dict(env, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1)
    except FileNotFoundError:
        raise CommandError(f"{what}: command {cmd[0]} not found (are nnunetv2 and nnunetv2-xdim installed in this "
                           f"Python environment?)") from None
    with open(log_path, "a" if append else "w") as log:
        log.write(line + "\n\n")
        for out in proc.stdout:
            log.write(out)
            tail.append(out)
            if show(out):
                sys.stdout.write(indent + out)
        rc = proc.wait()
    sys.stdout.flush()
    if rc != 0:
        raise CommandError(f"{what} failed with exit status {rc}:\n  {line}\n"
                           f"last lines of its output (full log: {log_path}):\n" + "".join(tail), rc)
    return time.time() - start
