"""Instructions per engine command, counted by callgrind: a figure that does not move.

Wall-clock throughput on a shared 2-core VM varies by about 15 % from run to run;
instruction counts are the same every time for the same code and flow, so they show
what a change to the engine really costs. Needs valgrind (`apt-get install valgrind`).

    python bench/engine_instructions.py [--commands 20000] [--seed 1]

Prints one JSON object: instructions per command of `Engine.apply` over the generated
flow (setup and flow generation are not counted), and whether the engine is compiled.
"""

from __future__ import annotations

import argparse
import json

from callgrind import count_instructions

CHILD = """
import os, subprocess, sys
from mercato.benchmarks import FLOW_TS, _fresh_engine
from mercato.flow import generate_flow
from mercato.runtime import tune_gc
setup, flow = generate_flow({seed}, {commands})
engine = _fresh_engine(setup)
tune_gc()
apply = engine.apply
pid = str(os.getpid())
subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True, check=True)
for seq, command in enumerate(flow, len(setup) + 1):
    apply(seq, FLOW_TS, command)
subprocess.run(["callgrind_control", "-i", "off", pid], capture_output=True, check=True)
import mercato.core.engine as m
print("compiled" if not m.__file__.endswith(".py") else "pure")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    total, printed = count_instructions(CHILD.format(seed=args.seed, commands=args.commands))
    print(
        json.dumps(
            {
                "commands": args.commands,
                "seed": args.seed,
                "engine": printed.strip().splitlines()[-1],
                "instructions_per_command": round(total / args.commands),
            }
        )
    )


if __name__ == "__main__":
    main()
