"""Process-level settings for a process that hosts the engine."""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 100_000


def tune_gc() -> None:
    """Tune the cyclic garbage collector for an engine process; call after recovery.

    Everything alive at that point (the recovered engine state) is moved to the
    permanent generation (``gc.freeze``), so collections never scan it again. The hot
    path allocates mostly objects the collector does not track (events are ``gc=False``
    structs) and containers that die young without forming cycles, so collecting the
    youngest generation every 700 allocations (the default) only costs time: measured
    at about a fifth of the engine's throughput (docs/benchmarks.md). Cycles are still
    collected, just less often.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
