"""Load generator for the crash test: ``python tests/crashload.py DIR --seed S``.

Opens (recovers) the sequencer on DIR, prints ``READY <last_seq> <state_hash>``, then
submits a generated order flow and prints one line ``<seq> <digest>`` per command
*after* its result was released (digest: blake2b-64 of the command's msgpack bytes).
Lines are written with one unbuffered ``os.write`` each, so a SIGKILL loses none that
was printed. The crash test kills this process at random moments and checks that every
printed (seq, digest) is in the journal and that recovery is exact.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sys
from collections.abc import Iterator, Sequence

import msgspec

from mercato.core.codec import encode_command
from mercato.core.commands import Command, CreditDeposit
from mercato.journal import AsyncSequencer, Sequencer

# The generated setup deposits 10**20 atoms, more than msgpack's 64-bit integers can
# carry; deposits are clamped so that repeated setups keep every balance encodable.
MAX_DEPOSIT = 10**15


def command_digest(cmd: Command) -> str:
    return hashlib.blake2b(encode_command(cmd), digest_size=8).hexdigest()


def flow_commands(seed: int, count: int, first_order_id: int) -> list[Command]:
    """Setup (assets, markets, deposits with a per-seed tag) then the trading flow."""
    from mercato.flow import generate_flow

    setup, flow = generate_flow(seed, count, users=8, first_order_id=first_order_id)
    clamped: list[Command] = [
        msgspec.structs.replace(c, amount=min(c.amount, MAX_DEPOSIT))
        if isinstance(c, CreditDeposit)
        else c
        for c in setup
    ]
    return clamped + flow


def _emit(line: str) -> None:
    data = line.encode()
    while data:
        data = data[os.write(1, data) :]


async def _run_async(args: argparse.Namespace) -> None:
    front = await AsyncSequencer.open(
        args.dir,
        max_batch=args.max_batch,
        max_wait_us=args.max_wait_us,
        snapshot_every=args.snapshot_every,
        segment_bytes=args.segment_bytes,
    )
    engine = front.engine
    _emit(f"READY {engine.last_seq} {engine.state_hash()}\n")
    commands = iter(flow_commands(args.seed, args.count, engine.next_order_id))

    async def worker() -> None:
        for cmd in commands:  # the iterator is shared: each command is taken once
            result = await front.submit(cmd)
            _emit(f"{result.seq} {command_digest(cmd)}\n")

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    await front.close()
    _emit("DONE\n")


def _batches(commands: Sequence[Command], rng: random.Random, top: int) -> Iterator[list[Command]]:
    i = 0
    while i < len(commands):
        n = rng.randint(1, top)
        yield list(commands[i : i + n])
        i += n


def _run_sync(args: argparse.Namespace) -> None:
    with Sequencer(
        args.dir,
        max_batch=args.max_batch,
        snapshot_every=args.snapshot_every,
        segment_bytes=args.segment_bytes,
    ) as sequencer:
        engine = sequencer.engine
        _emit(f"READY {engine.last_seq} {engine.state_hash()}\n")
        commands = flow_commands(args.seed, args.count, engine.next_order_id)
        rng = random.Random(args.seed)
        for batch in _batches(commands, rng, args.max_batch):
            results = sequencer.process(batch)
            lines = [f"{r.seq} {command_digest(c)}\n" for r, c in zip(results, batch, strict=True)]
            _emit("".join(lines))
    _emit("DONE\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tests/crashload.py")
    parser.add_argument("dir")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=50_000, help="trading commands")
    parser.add_argument("--mode", choices=("async", "sync"), default="async")
    parser.add_argument("--concurrency", type=int, default=64, help="async submitters")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--max-wait-us", type=int, default=0)
    parser.add_argument("--snapshot-every", type=int, default=500)
    parser.add_argument("--segment-bytes", type=int, default=256 * 1024)
    args = parser.parse_args(argv)
    if args.mode == "async":
        asyncio.run(_run_async(args))
    else:
        _run_sync(args)


if __name__ == "__main__":
    main(sys.argv[1:])
