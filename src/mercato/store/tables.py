"""SQLAlchemy Core schema of the SQL store (accounts, sessions, API keys, audit) and of
the trading projection (orders, trades, fills, ledger, candles) that
:mod:`mercato.store.projector` writes from the engine's event stream.

Conventions:

- Every timestamp is a BIGINT of milliseconds since the Unix epoch (UTC), written by the
  application; the database never fills in a time by itself.
- Every ``id`` is a BIGINT autoincrement primary key (INTEGER on SQLite, where only an
  ``INTEGER PRIMARY KEY`` aliases the rowid). SQLite tables use ``AUTOINCREMENT`` so an id
  is never handed out twice, even after the newest row is deleted (``users.id`` is the user
  id the engine keys balances by); PostgreSQL sequences never reuse values anyway.
- Constraint and index names come from :data:`NAMING_CONVENTION`, so migrations can name
  what they alter or drop on both backends.
- Projection tables hold the engine's integers (atoms, ticks, lots, ids, seqs) in BIGINT
  columns; a sum that could outgrow a signed 64-bit integer (candle volumes) is TEXT holding
  a decimal integer. They have no foreign keys: the engine already accepted what they
  mirror, and a projection must never refuse an event.

``migrations/versions/`` must create exactly this schema; ``tests/store`` checks that with
Alembic's ``compare_metadata`` on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: ``one_time_tokens.purpose`` values.
PURPOSE_VERIFY_EMAIL: Final = "verify_email"
PURPOSE_RESET_PASSWORD: Final = "reset_password"
ONE_TIME_TOKEN_PURPOSES: Final[tuple[str, ...]] = (PURPOSE_VERIFY_EMAIL, PURPOSE_RESET_PASSWORD)

metadata: Final = MetaData(naming_convention=NAMING_CONVENTION)

#: Primary and foreign key type: BIGINT, INTEGER on SQLite (rowid alias, autoincrement).
ID_TYPE: Final[TypeEngine[int]] = BigInteger().with_variant(Integer(), "sqlite")
#: Milliseconds since the epoch, UTC.
MILLIS: Final[TypeEngine[int]] = BigInteger()


def _id() -> Column[int]:
    return Column("id", ID_TYPE, primary_key=True, autoincrement=True)


def _user_fk(*, nullable: bool = False, ondelete: str = "CASCADE") -> Column[int]:
    return Column(
        "user_id",
        ID_TYPE,
        ForeignKey("users.id", ondelete=ondelete),
        nullable=nullable,
    )


users: Final = Table(
    "users",
    metadata,
    _id(),
    Column("email", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", Text, nullable=False, server_default=text("'user'")),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("email_verified_at", MILLIS, nullable=True),
    Column("failed_logins", Integer, nullable=False, server_default=text("0")),
    Column("locked_until", MILLIS, nullable=True),
    Column("totp_secret_enc", LargeBinary, nullable=True),
    Column("totp_enabled", Boolean, nullable=False, server_default=false()),
    Column("created_at", MILLIS, nullable=False),
    Column("updated_at", MILLIS, nullable=False),
    # The newest TOTP time step (Unix time // 30) accepted for the user: a code of that
    # step or an earlier one is refused (replay). Added by 0002, hence after updated_at.
    Column("totp_last_step", BigInteger, nullable=False, server_default=text("0")),
    # The UTS #39 skeleton of the address (mercato.auth.users.email_skeleton): look-alike
    # addresses share it, so the unique constraint lets only one of them register.
    # NULL only for a user who, before 0006, already had a look-alike of an older one.
    Column("email_skeleton", Text, nullable=True, unique=True),
    CheckConstraint("email = lower(email)", name="email_lower"),
    sqlite_autoincrement=True,
)

refresh_tokens: Final = Table(
    "refresh_tokens",
    metadata,
    _id(),
    _user_fk(),
    Column("family_id", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", MILLIS, nullable=False),
    Column("expires_at", MILLIS, nullable=False),
    Column("rotated_at", MILLIS, nullable=True),
    Column("revoked_at", MILLIS, nullable=True),
    Column("ip", Text, nullable=False),
    Column("user_agent", Text, nullable=False),
    Index(None, "family_id"),
    Index(None, "user_id"),
    sqlite_autoincrement=True,
)

one_time_tokens: Final = Table(
    "one_time_tokens",
    metadata,
    _id(),
    _user_fk(),
    Column("purpose", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", MILLIS, nullable=False),
    Column("expires_at", MILLIS, nullable=False),
    Column("used_at", MILLIS, nullable=True),
    CheckConstraint("purpose IN ('verify_email', 'reset_password')", name="purpose"),
    Index(None, "user_id"),
    sqlite_autoincrement=True,
)

recovery_codes: Final = Table(
    "recovery_codes",
    metadata,
    _id(),
    _user_fk(),
    Column("code_hash", Text, nullable=False),
    Column("used_at", MILLIS, nullable=True),
    Index(None, "user_id"),
    sqlite_autoincrement=True,
)

api_keys: Final = Table(
    "api_keys",
    metadata,
    _id(),
    _user_fk(),
    Column("key_id", Text, nullable=False, unique=True),
    Column("label", Text, nullable=False),
    Column("secret_enc", LargeBinary, nullable=False),
    Column("permissions", Text, nullable=False),
    Column("ip_allowlist", Text, nullable=True),
    Column("created_at", MILLIS, nullable=False),
    Column("last_used_at", MILLIS, nullable=True),
    Column("deleted_at", MILLIS, nullable=True),
    Index(None, "user_id"),
    sqlite_autoincrement=True,
)

login_history: Final = Table(
    "login_history",
    metadata,
    _id(),
    _user_fk(nullable=True, ondelete="SET NULL"),
    Column("email", Text, nullable=False),
    Column("ip", Text, nullable=False),
    Column("user_agent", Text, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", MILLIS, nullable=False),
    Index(None, "user_id", "created_at"),
    sqlite_autoincrement=True,
)

email_outbox: Final = Table(
    "email_outbox",
    metadata,
    _id(),
    Column("to_address", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", MILLIS, nullable=False),
    Column("sent_at", MILLIS, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    # When the next delivery attempt is due (or, while one runs, when its claim lapses);
    # NULL once sent, given up, or when there is no SMTP to send to. Added by 0002.
    Column("next_attempt_at", MILLIS, nullable=True),
    Column("failed_at", MILLIS, nullable=True),  # delivery given up
    Index(None, "next_attempt_at"),
    sqlite_autoincrement=True,
)

# No foreign keys: the audit trail outlives the users it mentions.
audit_log: Final = Table(
    "audit_log",
    metadata,
    _id(),
    Column("user_id", ID_TYPE, nullable=True),
    Column("actor_id", ID_TYPE, nullable=True),
    Column("action", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("ip", Text, nullable=True),
    Column("created_at", MILLIS, nullable=False),
    Index(None, "created_at"),
    sqlite_autoincrement=True,
)


# ------------------------------------------------------------------------------------------
# The trading projection: written only by mercato.store.projector (docs/store.md).

#: An engine integer: atoms, ticks, lots, order / trade ids, sequence numbers.
ENGINE_INT: Final[TypeEngine[int]] = BigInteger()

#: ``orders.status`` of orders that are still open (the engine holds them).
OPEN_ORDER_STATUSES: Final[tuple[str, ...]] = ("UNTRIGGERED", "NEW", "PARTIALLY_FILLED")

#: One row per engine order, created by OrderAccepted and kept up to date by the order's
#: later events (status changes, amends, trigger, fills).
orders: Final = Table(
    "orders",
    metadata,
    # The engine's order id (INTEGER on SQLite: the rowid; never generated by the database).
    Column("order_id", ID_TYPE, primary_key=True, autoincrement=False),
    Column("user_id", ID_TYPE, nullable=False),
    Column("market", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("type", Text, nullable=False),  # as placed: a triggered stop keeps its type
    Column("time_in_force", Text, nullable=False),
    Column("client_order_id", Text, nullable=False),  # '' when none
    Column("price", ENGINE_INT, nullable=False),  # ticks; 0 for market orders
    Column("stop_price", ENGINE_INT, nullable=False),  # ticks; 0 unless a stop
    Column("quantity", ENGINE_INT, nullable=False),  # lots
    Column("iceberg_quantity", ENGINE_INT, nullable=False),  # lots; 0 unless an iceberg
    Column("quote_quantity", ENGINE_INT, nullable=False),  # quote atoms; market orders by amount
    Column("expire_at", MILLIS, nullable=False),  # 0 unless GTD
    Column("stp", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("filled", ENGINE_INT, nullable=False),  # lots
    Column("filled_base", ENGINE_INT, nullable=False),  # base atoms
    Column("filled_quote", ENGINE_INT, nullable=False),  # quote atoms
    Column("fee", ENGINE_INT, nullable=False),  # atoms of fee_asset
    Column("fee_asset", Text, nullable=True),  # base for buys, quote for sells; set by a fill
    Column("reason", Text, nullable=False),  # of the last status change; '' if none
    Column("created_at", MILLIS, nullable=False),
    Column("updated_at", MILLIS, nullable=False),
    Column("triggered_at", MILLIS, nullable=True),  # stops: when the condition held
    Column("created_seq", ENGINE_INT, nullable=False),
    Column("updated_seq", ENGINE_INT, nullable=False),
    Index(None, "user_id", "order_id"),
    Index(None, "user_id", "client_order_id"),
    Index(None, "status", "user_id"),
    Index(None, "user_id", "market", "created_at"),
)

#: The public trade tape: one row per Trade event.
trades: Final = Table(
    "trades",
    metadata,
    Column("trade_id", ID_TYPE, primary_key=True, autoincrement=False),
    Column("market", Text, nullable=False),
    Column("price", ENGINE_INT, nullable=False),  # ticks
    Column("quantity", ENGINE_INT, nullable=False),  # lots
    Column("base_amount", ENGINE_INT, nullable=False),  # atoms
    Column("quote_amount", ENGINE_INT, nullable=False),  # atoms
    Column("taker_side", Text, nullable=False),
    Column("maker_order_id", ENGINE_INT, nullable=False),
    Column("taker_order_id", ENGINE_INT, nullable=False),
    Column("ts", MILLIS, nullable=False),
    Column("seq", ENGINE_INT, nullable=False),
    Index(None, "market", "trade_id"),
)

#: Each user's side of a trade: two rows per trade (role MAKER and TAKER).
fills: Final = Table(
    "fills",
    metadata,
    _id(),
    Column("user_id", ID_TYPE, nullable=False),
    Column("trade_id", ENGINE_INT, nullable=False),
    Column("order_id", ENGINE_INT, nullable=False),
    Column("market", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("role", Text, nullable=False),  # MAKER | TAKER
    Column("price", ENGINE_INT, nullable=False),
    Column("quantity", ENGINE_INT, nullable=False),
    Column("base_amount", ENGINE_INT, nullable=False),
    Column("quote_amount", ENGINE_INT, nullable=False),
    Column("fee", ENGINE_INT, nullable=False),
    Column("fee_asset", Text, nullable=False),
    Column("ts", MILLIS, nullable=False),
    Column("seq", ENGINE_INT, nullable=False),
    UniqueConstraint("trade_id", "role"),
    Index(None, "user_id", "id"),
    Index(None, "user_id", "market", "ts"),
    sqlite_autoincrement=True,
)

#: Every change of a user account (available or locked) of one asset, in stream order.
ledger_entries: Final = Table(
    "ledger_entries",
    metadata,
    _id(),
    Column("user_id", ID_TYPE, nullable=False),
    Column("asset", Text, nullable=False),
    Column("account", Text, nullable=False),  # available | locked
    Column("delta", ENGINE_INT, nullable=False),  # signed atoms
    Column("balance_after", ENGINE_INT, nullable=False),
    Column("reason", Text, nullable=False),  # reserve, release, trade, fee, deposit, withdrawal
    Column("ref", ENGINE_INT, nullable=False),  # order id, trade id or 0
    Column("seq", ENGINE_INT, nullable=False),
    Column("ts", MILLIS, nullable=False),
    Index(None, "user_id", "id"),
    Index(None, "user_id", "asset", "id"),
    sqlite_autoincrement=True,
)

#: Every ledger account's balance as of the projection cursor: users' available and locked
#: (the running balances behind ``ledger_entries.balance_after``) and, with user_id 0, the
#: system accounts (fees, external_deposits, external_withdrawals): exact per-asset totals.
ledger_balances: Final = Table(
    "ledger_balances",
    metadata,
    Column("user_id", ID_TYPE, primary_key=True, autoincrement=False),
    Column("asset", Text, primary_key=True),
    Column("account", Text, primary_key=True),
    Column("balance", ENGINE_INT, nullable=False),  # signed atoms (double entry)
    Column("updated_seq", ENGINE_INT, nullable=False),
)

#: Each user's position per market traded, folded from their fills by
#: mercato.core.positions (weighted average cost, whole atoms) as the fills are projected.
positions: Final = Table(
    "positions",
    metadata,
    Column("user_id", ID_TYPE, primary_key=True, autoincrement=False),
    Column("market", Text, primary_key=True),
    Column("quantity", ENGINE_INT, nullable=False),  # base atoms bought here and still held
    # Quote atoms that may outgrow 64 bits over a long history: decimal integer strings.
    Column("cost", Text, nullable=False),
    Column("realised", Text, nullable=False),  # signed
    Column("updated_seq", ENGINE_INT, nullable=False),
)

#: OHLCV candles of every interval of mercato.core.candles, folded from the trades.
candles: Final = Table(
    "candles",
    metadata,
    Column("market", Text, primary_key=True),
    Column("interval", Text, primary_key=True),
    Column("open_time", MILLIS, primary_key=True),
    Column("open", ENGINE_INT, nullable=False),  # ticks
    Column("high", ENGINE_INT, nullable=False),
    Column("low", ENGINE_INT, nullable=False),
    Column("close", ENGINE_INT, nullable=False),
    # Sums of atoms that may outgrow 64 bits: decimal integer strings, exact on both backends.
    Column("volume", Text, nullable=False),
    Column("quote_volume", Text, nullable=False),
    Column("trades", ENGINE_INT, nullable=False),
    Column("first_trade_id", ENGINE_INT, nullable=False),
    Column("last_trade_id", ENGINE_INT, nullable=False),
    Index(None, "interval", "open_time"),
)

#: How far each projection has read the event stream: written in the same transaction as
#: the rows it accounts for.
projection_cursor: Final = Table(
    "projection_cursor",
    metadata,
    Column("name", Text, primary_key=True),
    Column("last_seq", ENGINE_INT, nullable=False),  # last command projected
    Column("last_ts", MILLIS, nullable=False),  # its sequencer timestamp
    Column("updated_at", MILLIS, nullable=False),  # wall clock of the last write
)

#: The store's identity: one row, written at the first boot of the service, whose
#: ``store_id`` the data directory records too (``store.json``, see store/identity.py), so
#: that a data directory is never run against another store.
store_identity: Final = Table(
    "store_identity",
    metadata,
    Column(
        "id",
        ID_TYPE,
        CheckConstraint("id = 1", name="single_row"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("store_id", Text, nullable=False),  # random, 32 hex digits
    Column("created_at", MILLIS, nullable=False),
)


# ------------------------------------------------------------------------------------------
# Custody (docs/custody.md): written by mercato.custody and mercato.application.custody,
# except deposit_credits, which the projector writes. Chain amounts are TEXT holding a
# decimal integer of the chain's smallest unit (wei exceed BIGINT); ledger amounts are
# engine atoms.

#: ``custody_deposits.status`` values.
DEPOSIT_STATUSES: Final[tuple[str, ...]] = (
    "PENDING",  # seen in a block, not yet deep enough
    "CONFIRMED",  # deep enough; the credit is being submitted
    "CREDITED",  # the engine credited it (deposit_credits has the seq)
    "DROPPED",  # its block left the chain before it was credited
    "REVERSED",  # credited, then its block left the chain: alert, withdrawals held
    "BELOW_MINIMUM",  # recorded, never credited
    "TREASURY",  # to the hot wallet from outside: operator funds, not a user's
)

#: ``custody_withdrawals.status`` values (docs/custody.md, "Withdrawal states").
WITHDRAWAL_STATUSES: Final[tuple[str, ...]] = (
    "REQUESTED",
    "APPROVAL_REQUIRED",
    "APPROVED",
    "SIGNED",
    "BROADCAST",
    "COMPLETED",
    "REJECTED",
    "CANCELED",
    "FAILED",
)

#: The one sealed BIP39 seed (mercato custody init).
custody_seed: Final = Table(
    "custody_seed",
    metadata,
    Column(
        "id",
        ID_TYPE,
        CheckConstraint("id = 1", name="single_row"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("sealed", LargeBinary, nullable=False),  # auth.crypto.seal with the master key
    Column("fingerprint", Text, nullable=False),  # first hot address, to recognise a seed
    Column("created_at", MILLIS, nullable=False),
)

#: The next HD index to hand out per chain and role, so indexes are gapless.
custody_address_counters: Final = Table(
    "custody_address_counters",
    metadata,
    Column("chain", Text, primary_key=True),
    Column("role", Text, primary_key=True),
    Column("next_index", ENGINE_INT, nullable=False),
)

#: Every address of ours: a hot wallet per chain (user_id NULL) and one deposit address
#: per user per chain, each from an index assigned once.
custody_addresses: Final = Table(
    "custody_addresses",
    metadata,
    _id(),
    Column("chain", Text, nullable=False),
    Column("role", Text, nullable=False),  # hot | deposit
    Column("user_id", ID_TYPE, nullable=True),
    Column("derivation_index", ENGINE_INT, nullable=False),
    Column("address", Text, nullable=False),
    Column("created_at", MILLIS, nullable=False),
    UniqueConstraint("chain", "address"),
    UniqueConstraint("chain", "role", "derivation_index"),
    UniqueConstraint("chain", "user_id"),
    sqlite_autoincrement=True,
)

#: The blocks each chain's watcher scanned (its cursor is the highest), kept for reorg
#: detection by parent hash; old ones are pruned.
custody_blocks: Final = Table(
    "custody_blocks",
    metadata,
    Column("chain", Text, primary_key=True),
    Column("height", ENGINE_INT, primary_key=True, autoincrement=False),
    Column("hash", Text, nullable=False),
    Column("parent_hash", Text, nullable=False),
    Column("parent_height", ENGINE_INT, nullable=False),
    Column("scanned_at", MILLIS, nullable=False),
)

#: Every transfer to one of our addresses, from first sight to credit (or drop).
custody_deposits: Final = Table(
    "custody_deposits",
    metadata,
    _id(),
    Column("external_id", Text, nullable=False, unique=True),  # chain:txid:index
    Column("chain", Text, nullable=False),
    Column("txid", Text, nullable=False),
    Column("tx_index", Integer, nullable=False),
    Column("asset", Text, nullable=False),
    Column("user_id", ID_TYPE, nullable=True),  # NULL: to the hot wallet (treasury)
    Column("address", Text, nullable=False),
    Column("from_address", Text, nullable=False),
    Column("amount_chain", Text, nullable=False),
    Column("amount", ENGINE_INT, nullable=False),  # ledger atoms, rounded down
    Column("dust_chain", Text, nullable=False),  # the remainder, in chain units
    Column("block_height", ENGINE_INT, nullable=False),
    Column("block_hash", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("seen_at", MILLIS, nullable=False),
    Column("updated_at", MILLIS, nullable=False),
    Index(None, "user_id", "id"),
    Index(None, "chain", "status"),
    sqlite_autoincrement=True,
)

#: Every CreditDeposit the engine accepted, written by the projector in the transaction
#: of its cursor: the authority on "was this deposit credited", beyond the engine's window.
deposit_credits: Final = Table(
    "deposit_credits",
    metadata,
    Column("external_id", Text, primary_key=True),
    Column("user_id", ID_TYPE, nullable=False),
    Column("asset", Text, nullable=False),
    Column("amount", ENGINE_INT, nullable=False),
    Column("seq", ENGINE_INT, nullable=False),
    Column("ts", MILLIS, nullable=False),
)

#: A user's withdrawal, from request to completion; ``withdrawal_id`` is the engine's.
custody_withdrawals: Final = Table(
    "custody_withdrawals",
    metadata,
    _id(),
    Column("withdrawal_id", Text, nullable=False, unique=True),
    Column("user_id", ID_TYPE, nullable=False),
    Column("asset", Text, nullable=False),
    Column("chain", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("amount", ENGINE_INT, nullable=False),  # atoms that arrive at the address
    Column("fee", ENGINE_INT, nullable=False),  # atoms the exchange keeps; held on top
    Column("status", Text, nullable=False),
    Column("hold_state", Text, nullable=False),  # PENDING | HELD | SETTLED | RELEASED | NONE
    Column("approvals_required", Integer, nullable=False),  # 0: none
    Column("reason", Text, nullable=True),  # why REJECTED / FAILED / CANCELED
    Column("outgoing_id", ID_TYPE, nullable=True),
    Column("requested_at", MILLIS, nullable=False),
    Column("updated_at", MILLIS, nullable=False),
    Index(None, "user_id", "requested_at"),
    Index(None, "status"),
    sqlite_autoincrement=True,
)

#: Admin decisions on withdrawals above the approval threshold (one per admin).
custody_approvals: Final = Table(
    "custody_approvals",
    metadata,
    _id(),
    Column("withdrawal_id", Text, nullable=False),
    Column("admin_id", ID_TYPE, nullable=False),
    Column("decision", Text, nullable=False),  # APPROVE | REJECT
    Column("created_at", MILLIS, nullable=False),
    UniqueConstraint("withdrawal_id", "admin_id"),
    sqlite_autoincrement=True,
)

#: Each user's withdrawal addresses; a new one is usable only from ``usable_at``.
custody_address_book: Final = Table(
    "custody_address_book",
    metadata,
    _id(),
    _user_fk(),
    Column("chain", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("created_at", MILLIS, nullable=False),
    Column("usable_at", MILLIS, nullable=False),
    UniqueConstraint("user_id", "chain", "address"),
    sqlite_autoincrement=True,
)

#: Every transfer we send (withdrawals, sweeps, gas top-ups, hot -> cold), at most one per
#: (kind, ref): the never-twice machinery (docs/custody.md, "Sending").
custody_outgoing: Final = Table(
    "custody_outgoing",
    metadata,
    _id(),
    Column("kind", Text, nullable=False),  # WITHDRAWAL | SWEEP | GAS | COLD
    Column("ref", Text, nullable=False),  # withdrawal id, or the sweep's own reference
    Column("chain", Text, nullable=False),
    Column("asset", Text, nullable=False),
    Column("from_role", Text, nullable=False),
    Column("from_index", ENGINE_INT, nullable=False),
    Column("from_address", Text, nullable=False),
    Column("to_address", Text, nullable=False),
    Column("amount_chain", Text, nullable=False),
    Column("status", Text, nullable=False),  # SIGNED | BROADCAST | COMPLETED | FAILED
    Column("nonce", ENGINE_INT, nullable=True),
    Column("txid", Text, nullable=True),  # the attempt that was mined
    Column("fee_paid_chain", Text, nullable=True),  # native chain units, once mined
    Column("mined_height", ENGINE_INT, nullable=True),
    Column("created_at", MILLIS, nullable=False),
    Column("updated_at", MILLIS, nullable=False),
    UniqueConstraint("kind", "ref"),
    Index(None, "chain", "status"),
    sqlite_autoincrement=True,
)

#: Every signed transaction of an outgoing transfer, committed before its broadcast:
#: the first and each fee-bumped replacement (same nonce) or re-signed one (Solana).
custody_attempts: Final = Table(
    "custody_attempts",
    metadata,
    _id(),
    Column("outgoing_id", ID_TYPE, nullable=False),
    Column("chain", Text, nullable=False),
    Column("txid", Text, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("nonce", ENGINE_INT, nullable=True),
    Column("max_fee", Text, nullable=False),
    Column("priority_fee", Text, nullable=False),
    Column("gas_limit", ENGINE_INT, nullable=False),
    Column("recent_blockhash", Text, nullable=False),
    Column("valid_until", ENGINE_INT, nullable=True),
    Column("created_at", MILLIS, nullable=False),
    Column("broadcast_at", MILLIS, nullable=True),
    UniqueConstraint("chain", "txid"),
    Index(None, "outgoing_id"),
    sqlite_autoincrement=True,
)

#: Mercato's own EVM nonce allocator, per sending address: gapless, never a node's
#: pending count (docs/custody.md, "Nonces").
custody_nonces: Final = Table(
    "custody_nonces",
    metadata,
    Column("chain", Text, primary_key=True),
    Column("address", Text, primary_key=True),
    Column("next_nonce", ENGINE_INT, nullable=False),
)

#: Alerts for the operator (reversed credits, hot wallet below its floor, ...).
custody_alerts: Final = Table(
    "custody_alerts",
    metadata,
    _id(),
    Column("severity", Text, nullable=False),  # critical | warning
    Column("kind", Text, nullable=False),
    Column("chain", Text, nullable=False),
    Column("subject", Text, nullable=False),  # e.g. the deposit's external id
    Column("detail", Text, nullable=False),
    Column("created_at", MILLIS, nullable=False),
    Column("acknowledged_at", MILLIS, nullable=True),
    Column("acknowledged_by", ID_TYPE, nullable=True),
    Index(None, "acknowledged_at"),
    sqlite_autoincrement=True,
)

#: Withdrawals of one asset held for one user (a credited deposit was reversed).
custody_withdrawal_holds: Final = Table(
    "custody_withdrawal_holds",
    metadata,
    _id(),
    Column("user_id", ID_TYPE, nullable=False),
    Column("asset", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("subject", Text, nullable=False),  # the reversed deposit's external id
    Column("created_at", MILLIS, nullable=False),
    Column("released_at", MILLIS, nullable=True),
    Column("released_by", ID_TYPE, nullable=True),
    Index(None, "user_id", "asset"),
    sqlite_autoincrement=True,
)
