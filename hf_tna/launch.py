"""Run a training script as its own `accelerate launch` process, the way the examples train each model.

The command line and everything the process prints go to a log file; a failure raises with the log's last lines.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path


def accelerate_launch(script, argv: list[str], *, config_file, num_threads: int, log, what: str = "") -> None:
    """`accelerate launch --config_file CONFIG_FILE --num_cpu_threads_per_process N SCRIPT *ARGV`, logged to `log`.

    Raises RuntimeError naming `what` (default: the script), the exit status, the log and its last 30 lines."""
    threads = str(max(int(num_threads), 1))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
           "--num_cpu_threads_per_process", threads, str(script), *argv]
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as f:
        f.write(shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"accelerate launch failed ({proc.returncode}) for {what or script}; log {log}:\n{tail}")
