"""Double-entry postings of events: the ledger as consumers and auditors see it.

The engine emits a :class:`Transfer` for every single balance movement and a
:class:`Trade` for each fill, whose four legs are implied by its fields (one event
instead of five keeps the matching loop fast). :func:`postings` spells out the legs
of any event, so a consumer can rebuild every account from the event stream alone.
"""

from __future__ import annotations

from mercato.core.events import Event, Trade, Transfer
from mercato.core.model import AVAILABLE, FEE, FEES, LOCKED, TRADE


def trade_postings(trade: Trade) -> list[Transfer]:
    """The legs of a fill: quote and base change hands, then each side pays its fee."""
    if trade.taker_side == "BUY":
        buyer, seller = trade.taker_user, trade.maker_user
        buyer_fee, seller_fee = trade.taker_fee, trade.maker_fee
    else:
        buyer, seller = trade.maker_user, trade.taker_user
        buyer_fee, seller_fee = trade.maker_fee, trade.taker_fee
    tid = trade.trade_id
    legs = [
        Transfer(trade.quote, trade.quote_amount, LOCKED, buyer, AVAILABLE, seller, TRADE, tid),
        Transfer(trade.base, trade.base_amount, LOCKED, seller, AVAILABLE, buyer, TRADE, tid),
    ]
    if buyer_fee:
        legs.append(Transfer(trade.base, buyer_fee, AVAILABLE, buyer, FEES, 0, FEE, tid))
    if seller_fee:
        legs.append(Transfer(trade.quote, seller_fee, AVAILABLE, seller, FEES, 0, FEE, tid))
    return legs


def postings(event: Event) -> list[Transfer]:
    """Every debit/credit pair an event carries (none for events that move no money)."""
    if type(event) is Transfer:
        return [event]
    if type(event) is Trade:
        return trade_postings(event)
    return []


def account_balances(events: list[Event]) -> dict[tuple[int, int, str], int]:
    """Replay postings into signed balances keyed by (account kind, user, asset)."""
    balances: dict[tuple[int, int, str], int] = {}
    for event in events:
        for leg in postings(event):
            debit = (leg.debit_kind, leg.debit_user, leg.asset)
            credit = (leg.credit_kind, leg.credit_user, leg.asset)
            balances[debit] = balances.get(debit, 0) - leg.amount
            balances[credit] = balances.get(credit, 0) + leg.amount
    return balances
