"""Count the instructions a Python snippet executes under valgrind's callgrind, for the
`*_instructions.py` benchmarks: a figure that does not move with the machine's load.

Counting starts off (``--instr-atstart=no``): the snippet turns it on and off around the
work it measures with ``callgrind_control -i on|off PID``, so set-up and imports are left
out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile


def count_instructions(snippet: str, *args: str) -> tuple[int, str]:
    """Run ``python -c snippet args...`` under callgrind: total instructions counted, and
    what the snippet printed."""
    python = sys.executable  # the interpreter itself (a venv link keeps its venv), not a shim
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             python, "-c", snippet, *args],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        with open(out) as profile:
            totals = re.search(r"^totals:\s+(\d+)", profile.read(), re.MULTILINE)
    if totals is None:
        raise SystemExit("callgrind wrote no totals")
    return int(totals.group(1)), run.stdout
