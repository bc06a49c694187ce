"""Positions: each user's weighted-average-cost position per market, kept by the projector.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Before this revision ``GET /portfolio`` folded all of a user's fills on every request. The
upgrade creates the table and fills it from the fills already projected, folded in stream
order by the rule of this revision (frozen here, like the schema: migrations never import
``mercato.store``). The downgrade drops it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INT = sa.BigInteger()
BATCH = 5_000


def upgrade() -> None:
    positions = op.create_table(
        "positions",
        sa.Column("user_id", ID, nullable=False, autoincrement=False),
        sa.Column("market", sa.Text(), nullable=False),
        sa.Column("quantity", INT, nullable=False),
        sa.Column("cost", sa.Text(), nullable=False),
        sa.Column("realised", sa.Text(), nullable=False),
        sa.Column("updated_seq", INT, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "market", name=op.f("pk_positions")),
    )
    assert positions is not None
    _backfill(positions)


def downgrade() -> None:
    op.drop_table("positions")


def _backfill(positions: sa.Table) -> None:
    fills = sa.table(
        "fills", sa.column("id"), sa.column("user_id"), sa.column("market"), sa.column("side"),
        sa.column("base_amount"), sa.column("quote_amount"), sa.column("fee"), sa.column("seq"),
    )  # fmt: skip
    folded: dict[tuple[int, str], list[int]] = {}  # -> [quantity, cost, realised, seq]
    rows = op.get_bind().execute(
        sa.select(fills.c.user_id, fills.c.market, fills.c.side, fills.c.base_amount,
                  fills.c.quote_amount, fills.c.fee, fills.c.seq).order_by(fills.c.id)
    )  # fmt: skip
    for user_id, market, side, base, quote, fee, seq in rows:
        state = folded.setdefault((user_id, market), [0, 0, 0, 0])
        _add(state, side, base, quote, fee)
        state[3] = seq
    values = [
        {"user_id": user, "market": market, "quantity": q, "cost": str(c), "realised": str(r),
         "updated_seq": seq}
        for (user, market), (q, c, r, seq) in folded.items()
    ]  # fmt: skip
    for start in range(0, len(values), BATCH):
        op.bulk_insert(positions, values[start : start + BATCH])


def _add(state: list[int], side: str, base: int, quote: int, fee: int) -> None:
    quantity, cost, _, _ = state
    if side == "BUY":
        state[0], state[1] = quantity + base - fee, cost + quote
        return
    covered = min(base, quantity)
    if covered == 0:
        return
    proceeds = quote - fee if covered == base else _half_even((quote - fee) * covered, base)
    cost_out = cost if covered == quantity else _half_even(cost * covered, quantity)
    state[0], state[1], state[2] = (
        quantity - covered,
        cost - cost_out,
        state[2] + proceeds - cost_out,
    )


def _half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2):
        quotient += 1
    return quotient
