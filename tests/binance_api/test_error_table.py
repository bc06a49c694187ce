"""The one table from Mercato's refusal codes to Binance's triples is complete (every
code the source can raise is mapped, or listed as outside the spot API) and documented
(docs/binance.md, "Errors", lists every entry)."""

from __future__ import annotations

import re
from pathlib import Path

from mercato.wire.binance_errors import BY_CODE, CANCEL_REFUSALS, OUTSIDE_SPOT, QUERY_REFUSALS

ROOT = Path(__file__).resolve().parents[2]
RAISED = re.compile(
    r"(?:Rejection|ServiceError|AuthError|UserError|ApiError|CodedError|RateLimited)\(\s*"
    r"(?:[0-9]+,\s*)?\"([A-Z_]+)\""
)  # fmt: skip
# Codes built from a field's name (application/trading.py parse_field: INVALID_<WHAT>).
BUILT = {"INVALID_QUANTITY", "INVALID_PRICE", "INVALID_QUOTE_QUANTITY", "INVALID_STOP_PRICE",
         "INVALID_ICEBERG_QUANTITY", "INVALID_AMOUNT"}  # fmt: skip


def raised_codes() -> set[str]:
    codes = set(BUILT)
    for source in (ROOT / "src" / "mercato").rglob("*.py"):
        codes.update(RAISED.findall(source.read_text()))
    return codes


def test_every_code_is_mapped_or_outside_spot() -> None:
    unmapped = raised_codes() - set(BY_CODE) - set(OUTSIDE_SPOT)
    assert not unmapped, f"map these in wire/binance_errors.py: {sorted(unmapped)}"
    assert not set(BY_CODE) & set(OUTSIDE_SPOT)


def row(code: str, triple: tuple[int, int, str]) -> str:
    status, number, msg = triple
    return f"| `{code}` | {status} | {number} | {msg} |"


def test_the_doc_lists_every_entry() -> None:
    doc = (ROOT / "docs" / "binance.md").read_text()
    missing = [row(c, t) for c, t in BY_CODE.items() if row(c, t) not in doc]
    missing += [row(c, t) for c, t in CANCEL_REFUSALS.items() if row(c, t) not in doc]
    missing += [row(c, t) for c, t in QUERY_REFUSALS.items() if row(c, t) not in doc]
    assert not missing, "docs/binance.md, Errors, lacks:\n" + "\n".join(missing)
    assert all(f"`{code}`" in doc for code in OUTSIDE_SPOT)
