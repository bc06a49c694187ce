"""Crash test: SIGKILL a loaded sequencer at random moments, restart it, check recovery.

A subprocess (``python tests/crashload.py``, test tooling beside this file) recovers the
data directory, prints ``READY <last_seq> <state_hash>``, then submits a generated order
flow and prints ``<seq> <digest>`` for each command once its result was released. The
test kills it with SIGKILL after a random delay (sometimes during startup/recovery),
sometimes also tears the unacknowledged end of the journal the way a power loss could,
and after every kill checks that:

* every acknowledged (seq, digest) is in the journal,
* recovery (newest valid snapshot + journal tail, as the sequencer does it) gives the
  same state hash as a clean replay of the journal alone,
* the ledger invariants hold,
* the restarted process reports exactly that recovered state.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from mercato.core.codec import encode_command
from mercato.journal import (
    Sequencer,
    SnapshotStore,
    journal_dir,
    list_segments,
    read_records,
    replay_dir,
    snapshot_dir,
)
from mercato.journal import segments as seg

TIME_BUDGET = 55.0  # seconds for the whole test
MIN_KILLS = 20
LOADS = 4  # data directories; each one is killed and restarted several times
SNAPSHOT_EVERY = 500
CRASHLOAD = Path(__file__).with_name("crashload.py")


def digest(cmd: object) -> str:
    return hashlib.blake2b(encode_command(cmd), digest_size=8).hexdigest()  # type: ignore[arg-type]


def start(data_dir: Path, out: Path, seed: int, mode: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    with out.open("wb") as stdout, (out.with_suffix(".err")).open("wb") as stderr:
        return subprocess.Popen(
            [
                sys.executable, str(CRASHLOAD), str(data_dir),
                "--seed", str(seed), "--mode", mode, "--count", "40000",
                "--snapshot-every", str(SNAPSHOT_EVERY), "--segment-bytes", str(64 * 1024),
                "--max-batch", "128",
            ],
            stdout=stdout, stderr=stderr, env=env,
        )  # fmt: skip


def wait_ready(proc: subprocess.Popen[bytes], out: Path, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = out.read_bytes().decode()
        if "\n" in text:
            return text.split("\n", 1)[0]
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    return None


def parse_acks(out: Path) -> tuple[str | None, dict[int, str]]:
    """(READY line, acknowledged seq -> digest); a partial last line is ignored."""
    text = out.read_bytes().decode()
    lines = text.split("\n")[:-1]  # only complete lines
    ready = lines[0] if lines else None
    acks: dict[int, str] = {}
    for line in lines[1:]:
        if line == "DONE":
            continue
        seq_text, dig = line.split()
        acks[int(seq_text)] = dig
    return ready, acks


def tear_unacknowledged_tail(data_dir: Path, floor: int, rng: random.Random) -> str:
    """Simulate a power loss: cut the journal inside a record after ``floor`` (no acked
    record, no snapshot beyond it), or append garbage; only in the last segment."""
    segments = list_segments(journal_dir(data_dir))
    if not segments:
        return "no journal"
    name_seq, path = segments[-1]
    data = path.read_bytes()
    _, spans = seg._scan_bytes(path, data)
    if rng.random() < 0.3:
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        with path.open("ab") as f:
            f.write(rng.choice([junk, b"\x00" * len(junk)]))
        return f"appended {len(junk)} junk bytes"
    candidates = [k for k in range(len(spans)) if name_seq + k > floor]
    if not candidates:
        return "nothing unacknowledged to tear"
    k = rng.choice(candidates)
    body, length = spans[k]
    frame_start = body - seg.FRAME_HEADER_SIZE
    cut = rng.randint(frame_start + 1, body + length - 1)
    os.truncate(path, cut)
    return f"cut inside seq {name_seq + k}"


def check_recovery(data_dir: Path, acked: dict[int, str]) -> tuple[int, str, int]:
    """Verify the directory after a crash; return (last_seq, state_hash, snapshot seq)."""
    clean = replay_dir(data_dir)  # journal alone, read-only
    clean.check_invariants()
    journal = {seq: digest(cmd) for seq, _ts, cmd in read_records(journal_dir(data_dir))}
    assert len(journal) == clean.last_seq
    missing = {s: d for s, d in acked.items() if journal.get(s) != d}
    assert not missing, f"acknowledged commands lost or changed: {sorted(missing)[:10]}"

    # The real recovery path: truncate the torn tail, newest snapshot + journal tail.
    with Sequencer(data_dir, snapshot_every=SNAPSHOT_EVERY) as sequencer:
        engine = sequencer.engine
        assert engine.last_seq == clean.last_seq
        assert engine.state_hash() == clean.state_hash()
        engine.check_invariants()
        for asset, row in engine.total_balances().items():
            assert row["sum"] == 0, (asset, row)
        snap_seq = sequencer.snapshot_seq
    # After truncation, a reader sees the same and the snapshot path agrees as well.
    assert replay_dir(data_dir, use_snapshots=True).state_hash() == clean.state_hash()
    return clean.last_seq, clean.state_hash(), snap_seq


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("MERCATO_CRASH_SEED", "20240601")))
    started = time.monotonic()
    kills = restarts = tears = 0
    max_acked = 0
    snapshot_recoveries = 0
    per_load = -(-MIN_KILLS // LOADS) + 1  # a little more than needed
    log: list[str] = []
    for load in range(LOADS):
        data_dir = tmp_path / f"load{load}"
        acked: dict[int, str] = {}
        expected: tuple[int, str] | None = None
        for run in range(per_load):
            if time.monotonic() - started > TIME_BUDGET and kills >= MIN_KILLS:
                break
            out = tmp_path / f"load{load}-run{run}.out"
            mode = "sync" if (load + run) % 3 == 2 else "async"
            proc = start(data_dir, out, seed=load * 1000 + run, mode=mode)
            restarts += 1
            if rng.random() < 0.15:
                # Kill during startup: import, recovery, truncation, first batches.
                time.sleep(rng.uniform(0.0, 0.6))
            else:
                ready = wait_ready(proc, out, timeout=30)
                assert ready is not None, out.with_suffix(".err").read_text()
                time.sleep(rng.uniform(0.02, 0.5))
            proc.send_signal(signal.SIGKILL)
            rc = proc.wait()
            if rc == -signal.SIGKILL:
                kills += 1
            else:
                assert rc == 0, out.with_suffix(".err").read_text()

            ready, acks = parse_acks(out)
            if ready is not None:
                _, last_text, hash_text = ready.split()
                if expected is not None:
                    # the restarted process recovered exactly the state checked before
                    assert (int(last_text), hash_text) == expected, (ready, expected)
            for seq, dig in acks.items():
                assert acked.setdefault(seq, dig) == dig, f"seq {seq} acknowledged twice"
            if acks:
                max_acked = max(max_acked, max(acks))

            note = ""
            if rng.random() < 0.5:
                snaps = SnapshotStore(snapshot_dir(data_dir), create=False).seqs()
                floor = max([0, *acked, *snaps])
                note = tear_unacknowledged_tail(data_dir, floor, rng)
                tears += 1
            last_seq, state_hash, snap_seq = check_recovery(data_dir, acked)
            snapshot_recoveries += snap_seq > 0
            expected = (last_seq, state_hash)
            log.append(
                f"load {load} run {run} {mode}: rc {rc}, {len(acks)} acks, journal at "
                f"{last_seq}, snapshot {snap_seq} {note}"
            )
    elapsed = time.monotonic() - started
    print("\n".join(log))
    print(f"{kills} kills, {restarts} restarts, {tears} tears in {elapsed:.1f} s")
    assert kills >= MIN_KILLS, log
    assert max_acked > 0
    assert snapshot_recoveries > 0  # snapshot + tail recovery was exercised
    assert elapsed < 120
