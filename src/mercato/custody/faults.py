"""A fault-injection hook for the crash tests (docs/custody.md, "Crash safety").

``MERCATO_CUSTODY_PAUSE_AT`` names one point of the custody workers (:data:`POINTS`);
when a worker reaches it, :func:`pause_point` writes the marker file named by
``MERCATO_CUSTODY_PAUSE_FILE`` and then waits forever, so that a test can SIGKILL the
process at exactly that point. The variables are read once, at import: unset (as in
production), every ``pause_point`` returns at once and costs one comparison.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

POINTS = frozenset(
    {
        "after_sign",  # sender: create_outgoing committed, nothing broadcast yet
        "after_broadcast",  # sender: the broadcast returned, the row still SIGNED
        "mid_scan",  # watcher: a block with a deposit stored, the pass not finished
        "after_credit_submit",  # watcher: the engine accepted the credit, row not CREDITED
    }
)

PAUSE_AT = os.environ.get("MERCATO_CUSTODY_PAUSE_AT", "")
PAUSE_FILE = os.environ.get("MERCATO_CUSTODY_PAUSE_FILE", "")

if PAUSE_AT and PAUSE_AT not in POINTS:
    raise RuntimeError(
        f"MERCATO_CUSTODY_PAUSE_AT={PAUSE_AT!r} names no pause point ({', '.join(sorted(POINTS))})"
    )


async def pause_point(name: str) -> None:
    """Wait forever here if the environment names this point (after writing the marker
    file); return at once otherwise. A test hook: never set the variable in production."""
    assert name in POINTS, name
    if name != PAUSE_AT:
        return
    log.critical("custody paused at %s (MERCATO_CUSTODY_PAUSE_AT): waiting to be killed", name)
    if PAUSE_FILE:
        Path(PAUSE_FILE).write_text(name)
    await asyncio.Event().wait()
