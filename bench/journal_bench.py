"""Journal group-commit throughput: ``python bench/journal_bench.py [--dir DIR]``.

Appends batches of 1, 64 and 1024 records of ~50-byte payloads with
``JournalWriter.append_batch`` (one write + one fdatasync per batch) and prints records
per second. Payloads are encoded beforehand, so the figures are framing (length + CRC32)
+ write + fdatasync. Also prints the cost of a bare fdatasync on the same file system,
and, with ``--sequencer``, end-to-end commands/s through ``Sequencer.process`` (stamp,
encode, append, fdatasync, engine apply) for the same batch sizes.

Run it on the disk the journal will live on: a tmpfs makes fdatasync free.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from mercato.core.codec import encode_record
from mercato.core.commands import CancelOrder, Command
from mercato.journal import JournalWriter, Sequencer


def payload(seq: int) -> bytes:
    # CancelOrder with a client id: 47-52 bytes of msgpack, like a typical small command
    return encode_record(seq, 1_700_000_000_000 + seq, cmd(seq))


def cmd(seq: int) -> Command:
    return CancelOrder(user=seq % 1000, client_order_id=f"c-{seq:018d}")


def bare_fdatasync_us(directory: Path, rounds: int = 2000) -> float:
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        samples = []
        for _ in range(rounds):
            os.write(fd, b"x" * 64)
            t0 = time.perf_counter_ns()
            os.fdatasync(fd)
            samples.append(time.perf_counter_ns() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(samples) / 1000


def bench_writer(directory: Path, batch: int, seconds: float) -> tuple[float, float, int]:
    """(records/s, median µs per batch, payload bytes) appending ``batch``-record batches."""
    jdir = Path(tempfile.mkdtemp(prefix=f"writer-{batch}-", dir=directory))
    # Pre-encode enough batches for the time budget (re-encoding is not what we measure).
    with JournalWriter(jdir) as writer:
        writer.append_batch([payload(1)])  # create the segment outside the timing
        seq = 1
        per_batch: list[int] = []
        done = 0
        deadline = time.perf_counter() + seconds
        sizes = 0
        while time.perf_counter() < deadline:
            batch_payloads = [payload(s) for s in range(seq + 1, seq + 1 + batch)]
            sizes += sum(len(p) for p in batch_payloads)
            t0 = time.perf_counter_ns()
            writer.append_batch(batch_payloads)
            per_batch.append(time.perf_counter_ns() - t0)
            seq += batch
            done += batch
    total_s = sum(per_batch) / 1e9
    return done / total_s, statistics.median(per_batch) / 1000, sizes // done


def bench_sequencer(directory: Path, batch: int, seconds: float) -> float:
    """Commands/s through Sequencer.process in batches of ``batch`` (apply included)."""
    ddir = Path(tempfile.mkdtemp(prefix=f"sequencer-{batch}-", dir=directory))
    with Sequencer(ddir, max_batch=batch, snapshot_every=0) as sequencer:
        seq = 0
        elapsed = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            cmds = [cmd(s) for s in range(seq, seq + batch)]
            t0 = time.perf_counter_ns()
            sequencer.process(cmds)  # unknown orders: rejected, cheap to apply
            elapsed += time.perf_counter_ns() - t0
            seq += batch
    return seq / (elapsed / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size")
    parser.add_argument("--sequencer", action="store_true", help="also Sequencer.process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mercato-journal-bench-", dir=args.dir) as d:
        directory = Path(d)
        print(f"directory: {directory}")
        print(f"bare fdatasync (64-byte append): median {bare_fdatasync_us(directory):.0f} µs")
        print(f"{'batch':>6} {'records/s':>12} {'µs/batch (median)':>18} {'payload B':>10}")
        for batch in (1, 64, 1024):
            rate, per_batch_us, size = bench_writer(directory, batch, args.seconds)
            print(f"{batch:>6} {rate:>12,.0f} {per_batch_us:>18.1f} {size:>10}")
        if args.sequencer:
            print("Sequencer.process (stamp + encode + append + fdatasync + apply):")
            for batch in (1, 64, 1024):
                rate = bench_sequencer(directory, batch, args.seconds)
                print(f"{batch:>6} {rate:>12,.0f} commands/s")


if __name__ == "__main__":
    main()
