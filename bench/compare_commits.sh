#!/bin/bash
# Alternate two checkouts of Mercato (say the commit before a change and after it) on this
# machine: the HTTP floor (yardstick), bench engine pure and compiled, instructions per
# command (PYTHONHASHSEED=0, first round), bench api. Each checkout needs .venv (editable,
# dev extras) and .venv-compiled (MERCATO_COMPILE=1 pip install ".[dev]").
# usage: bench/compare_commits.sh BEFORE_DIR AFTER_DIR [ROUNDS]
B=$1; A=$2; N=${3:-2}
for round in $(seq 1 $N); do
  for side in before after; do
    D=$B; [ $side = after ] && D=$A
    cd $D
    echo "== round $round $side $(git -C $D log --oneline -1 | cut -c1-7) $(date -u +%H:%M:%S)"
    echo -n "floor: "; .venv/bin/python bench/http_floor.py --seconds 5 --connections 32 2>/dev/null | tail -1
    echo -n "engine pure: "; .venv/bin/mercato bench engine --commands 200000 --repeat 3 --json 2>/dev/null | tail -1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print({k:d[k] for k in d if k in ("engine_commands_per_sec","durable_commands_per_sec","async_commands_per_sec","state_hash","engine_p99_us")})'
    echo -n "engine compiled: "; .venv-compiled/bin/mercato bench engine --commands 200000 --repeat 3 --json 2>/dev/null | tail -1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print({k:d[k] for k in d if k in ("engine_commands_per_sec","durable_commands_per_sec","async_commands_per_sec","state_hash","engine_p99_us")})'
    if [ $round = 1 ]; then
      echo -n "instr pure: "; PYTHONHASHSEED=0 .venv/bin/python bench/engine_instructions.py 2>/dev/null | tail -1
      echo -n "instr compiled: "; PYTHONHASHSEED=0 .venv-compiled/bin/python bench/engine_instructions.py 2>/dev/null | tail -1
    fi
    echo -n "api: "; .venv/bin/mercato bench api --seconds 10 --subscribers 500 --json 2>/dev/null | tail -1
  done
done
