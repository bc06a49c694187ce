"""Administration commands: assets, markets and their status, fee tiers, frozen users
and the global kill switch."""

from __future__ import annotations

import msgspec

from mercato.core import commands as c
from mercato.core import events as e
from mercato.core.book import MarketState
from mercato.core.handlers_trading import cancel_user_orders
from mercato.core.model import MAX_ASSET_DECIMALS, Asset, MarketRules
from mercato.core.money import MoneyError, parse_fee_rate
from mercato.core.results import Rejection, Result
from mercato.core.state import EngineState, known_asset, known_market


def upsert_asset(
    state: EngineState, seq: int, ts: int, cmd: c.UpsertAsset, events: list[e.Event]
) -> Result:
    if not cmd.symbol or not cmd.symbol.isalnum() or len(cmd.symbol) > 16:
        raise Rejection("INVALID_ASSET", "asset symbol must be 1-16 letters or digits")
    if not 0 <= cmd.decimals <= MAX_ASSET_DECIMALS:
        raise Rejection("INVALID_ASSET", f"decimals must be within 0..{MAX_ASSET_DECIMALS}")
    known = state.assets.get(cmd.symbol)
    if known is not None and known.decimals != cmd.decimals:
        raise Rejection("ASSET_DECIMALS_IMMUTABLE", "ledger decimals of an asset never change")
    state.assets[cmd.symbol] = Asset(cmd.symbol, cmd.decimals)
    events.append(e.AssetUpserted(cmd.symbol, cmd.decimals))
    return Result(seq, "ACCEPTED", events)


def upsert_market(
    state: EngineState, seq: int, ts: int, cmd: c.UpsertMarket, events: list[e.Event]
) -> Result:
    spec = cmd.spec
    if not spec.symbol or len(spec.symbol) > 32:
        raise Rejection("INVALID_MARKET", "market symbol must be 1-32 characters")
    if spec.base == spec.quote:
        raise Rejection("INVALID_MARKET", "base and quote must differ")
    base, quote = known_asset(state, spec.base), known_asset(state, spec.quote)
    if spec.status not in ("TRADING", "HALTED", "CANCEL_ONLY"):
        raise Rejection("INVALID_MARKET", f"unknown status {spec.status!r}")
    try:
        rules = MarketRules.derive(spec, base, quote)
    except MoneyError as error:
        raise Rejection("INVALID_MARKET", error.message) from error
    existing = state.markets.get(spec.symbol)
    if existing is None:
        state.markets[spec.symbol] = MarketState(spec, rules)
    else:
        old = existing.spec
        shape_changed = (
            old.base,
            old.quote,
            existing.rules.lot_atoms,
            existing.rules.notional_unit,
            existing.rules.tick_size,
        ) != (spec.base, spec.quote, rules.lot_atoms, rules.notional_unit, rules.tick_size)
        if shape_changed and any(o.market == spec.symbol for o in state.orders.values()):
            raise Rejection(
                "MARKET_HAS_ORDERS",
                "base, quote, tick_size and step_size can change only with no open orders",
            )
        existing.configure(spec, rules)
    events.append(e.MarketUpserted(spec))
    return Result(seq, "ACCEPTED", events)


def set_market_status(
    state: EngineState, seq: int, ts: int, cmd: c.SetMarketStatus, events: list[e.Event]
) -> Result:
    market = known_market(state, cmd.market)
    if cmd.status not in ("TRADING", "HALTED", "CANCEL_ONLY"):
        raise Rejection("INVALID_STATUS", f"unknown market status {cmd.status!r}")
    market.status = cmd.status
    market.spec = msgspec.structs.replace(market.spec, status=cmd.status)
    events.append(e.MarketStatusChanged(cmd.market, cmd.status))
    return Result(seq, "ACCEPTED", events)


def set_fee_tier(
    state: EngineState, seq: int, ts: int, cmd: c.SetFeeTier, events: list[e.Event]
) -> Result:
    if cmd.tier < 1:
        raise Rejection(
            "INVALID_FEE_TIER", "fee tiers are numbered from 1; tier 0 is the market default"
        )
    try:
        maker, taker = (
            parse_fee_rate(cmd.maker_fee, "maker_fee"),
            parse_fee_rate(cmd.taker_fee, "taker_fee"),
        )
    except MoneyError as error:
        raise Rejection("INVALID_FEE_TIER", error.message) from error
    state.fee_tiers[cmd.tier] = (maker, taker)
    events.append(e.FeeTierSet(cmd.tier, maker, taker))
    return Result(seq, "ACCEPTED", events)


def set_user_fee_tier(
    state: EngineState, seq: int, ts: int, cmd: c.SetUserFeeTier, events: list[e.Event]
) -> Result:
    if cmd.tier and cmd.tier not in state.fee_tiers:
        raise Rejection("INVALID_FEE_TIER", f"fee tier {cmd.tier} is not defined")
    if cmd.tier:
        state.user_tiers[cmd.user] = cmd.tier
    else:
        state.user_tiers.pop(cmd.user, None)
    events.append(e.UserFeeTierSet(cmd.user, cmd.tier))
    return Result(seq, "ACCEPTED", events)


def freeze(
    state: EngineState, seq: int, ts: int, cmd: c.FreezeUser, events: list[e.Event]
) -> Result:
    state.frozen.add(cmd.user)
    events.append(e.UserFrozen(cmd.user, True))
    if cmd.cancel_orders:
        cancel_user_orders(state, cmd.user, "", "USER_FROZEN", events)
    return Result(seq, "ACCEPTED", events)


def unfreeze(
    state: EngineState, seq: int, ts: int, cmd: c.UnfreezeUser, events: list[e.Event]
) -> Result:
    state.frozen.discard(cmd.user)
    events.append(e.UserFrozen(cmd.user, False))
    return Result(seq, "ACCEPTED", events)


def set_kill_switch(
    state: EngineState, seq: int, ts: int, cmd: c.SetKillSwitch, events: list[e.Event]
) -> Result:
    if cmd.mode not in ("OFF", "CANCEL_ONLY", "HALT"):
        raise Rejection("INVALID_STATUS", f"unknown kill switch mode {cmd.mode!r}")
    state.kill_switch = cmd.mode
    events.append(e.KillSwitchSet(cmd.mode))
    return Result(seq, "ACCEPTED", events)
