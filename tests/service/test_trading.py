"""Trading over real HTTP on both stores: two verified users funded by the faucet trade
with each other, and every number they can read back is checked by hand."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.conftest import Backend, Server
from service.test_sessions import PASSWORD, bearer, create_user


class Trader:
    def __init__(self, url: str, email: str) -> None:
        self.http = httpx.Client(base_url=f"{url}/api/v1", timeout=30)
        login = self.http.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        self.http.headers.update(bearer(login.json()["access_token"]))

    def fund(self, asset: str, amount: str) -> None:
        answer = self.http.post("/dev/faucet", json={"asset": asset, "amount": amount})
        assert answer.status_code == 200, answer.text

    def place(self, **order: Any) -> httpx.Response:
        return self.http.post("/orders", json={"market": "BTC-USDT", **order})

    def balances(self) -> dict[str, tuple[str, str]]:
        rows = self.http.get("/balances").json()
        return {r["asset"]: (r["available"], r["locked"]) for r in rows if r["total"] != "0"}


def ann_and_bob(backend: Backend, servers: list[Server]) -> tuple[Trader, Trader, Server]:
    """Two verified users signed in to a fresh `mercato serve --dev` on ``backend``."""
    for email in ("ann@example.com", "bob@example.com"):
        create_user(backend.data, email, backend.url if backend.name == "postgres" else None)
    server = Server(backend.data, backend.env, "--dev")
    servers.append(server)
    server.wait_ready()
    ann, bob = Trader(server.url, "ann@example.com"), Trader(server.url, "bob@example.com")
    return ann, bob, server


@pytest.fixture
def traders(backend: Backend, servers: list[Server]) -> tuple[Trader, Trader, Server]:
    ann, bob, server = ann_and_bob(backend, servers)
    ann.fund("USDT", "100000")
    bob.fund("BTC", "2")
    return ann, bob, server


def test_two_users_trade_and_every_number_adds_up(
    traders: tuple[Trader, Trader, Server],
) -> None:
    ann, bob, _ = traders
    resting = bob.place(side="SELL", price="50000", quantity="0.5", client_order_id="s1")
    assert resting.status_code == 201, resting.text
    sell = resting.json()["order"]
    assert (sell["status"], sell["filled"], resting.json()["fills"]) == ("NEW", "0", [])
    assert bob.balances() == {"BTC": ("1.5", "0.5")}

    taking = ann.place(side="BUY", price="50010", quantity="0.2")
    assert taking.status_code == 201, taking.text
    buy, fills = taking.json()["order"], taking.json()["fills"]
    # Fills at the maker's price; the taker's fee (0.1 %) comes out of the BTC received.
    assert (buy["status"], buy["filled"], buy["filled_quote"]) == ("FILLED", "0.2", "10000")
    assert (buy["average_price"], buy["fee"], buy["fee_asset"]) == ("50000", "0.0002", "BTC")
    assert [(f["price"], f["quantity"], f["role"], f["fee"]) for f in fills] == [
        ("50000", "0.2", "TAKER", "0.0002")
    ]
    # Ann locked 0.2 x 50010 and got back the 2 USDT of price improvement.
    assert ann.balances() == {"BTC": ("0.1998", "0"), "USDT": ("90000", "0")}
    # Bob received 10000 USDT less the 10 USDT maker fee; 0.3 BTC stays locked.
    assert bob.balances() == {"BTC": ("1.5", "0.3"), "USDT": ("9990", "0")}

    mine = bob.http.get("/trades").json()["items"]
    assert [(f["side"], f["role"], f["quantity"], f["quote_amount"], f["fee"], f["fee_asset"])
            for f in mine] == [("SELL", "MAKER", "0.2", "10000", "10", "USDT")]  # fmt: skip
    open_orders = bob.http.get("/orders").json()
    assert [(o["order_id"], o["status"], o["filled"]) for o in open_orders] == [
        (sell["order_id"], "PARTIALLY_FILLED", "0.2")
    ]
    assert ann.http.get("/orders").json() == []

    # The ledger explains every balance: per asset and account, deltas sum to it.
    for trader in (ann, bob):
        entries = trader.http.get("/ledger", params={"limit": 1000}).json()["items"]
        sums: dict[tuple[str, str], Decimal] = {}
        for entry in entries:
            key = (entry["asset"], entry["account"])
            sums[key] = sums.get(key, Decimal(0)) + Decimal(entry["delta"])
        for asset, (available, locked) in trader.balances().items():
            assert sums.get((asset, "available"), 0) == Decimal(available)
            assert sums.get((asset, "locked"), 0) == Decimal(locked)
    reasons = {e["reason"] for e in ann.http.get("/ledger").json()["items"]}
    assert reasons == {"deposit", "reserve", "trade", "fee", "release"}


def test_client_order_id_is_an_idempotency_key(traders: tuple[Trader, Trader, Server]) -> None:
    _, bob, _ = traders
    first = bob.place(side="SELL", price="60000", quantity="0.1", client_order_id="once")
    again = bob.place(side="SELL", price="60000", quantity="0.1", client_order_id="once")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True
    assert again.json()["order"]["order_id"] == first.json()["order"]["order_id"]
    assert bob.balances()["BTC"] == ("1.9", "0.1")  # one order's worth locked, not two
    # Still the original once it is no longer open.
    cancelled = bob.http.delete("/orders/by-client-id/once")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELED"
    third = bob.place(side="SELL", price="61000", quantity="0.3", client_order_id="once")
    assert third.status_code == 200 and third.json()["order"]["status"] == "CANCELED"
    assert bob.balances()["BTC"] == ("2", "0")


def test_cancel_amend_cancel_all_and_order_types(traders: tuple[Trader, Trader, Server]) -> None:
    ann, bob, _ = traders
    ids = [bob.place(side="SELL", price=p, quantity="0.1").json()["order"]["order_id"]
           for p in ("51000", "52000", "53000")]  # fmt: skip

    # Amend: a smaller quantity keeps priority, a new price moves the order.
    amended = bob.http.patch(f"/orders/{ids[0]}", json={"quantity": "0.05"})
    assert amended.status_code == 200, amended.text
    assert (amended.json()["quantity"], amended.json()["price"]) == ("0.05", "51000")
    moved = bob.http.patch(f"/orders/{ids[1]}", json={"price": "52500"})
    assert moved.json()["price"] == "52500"
    assert {**moved.json(), "updated_at": 0} == {
        **bob.http.get(f"/orders/{ids[1]}").json(),
        "updated_at": 0,
    }
    assert bob.balances()["BTC"] == ("1.75", "0.25")

    # Post-only that would take is refused; IOC and FOK behave.
    maker = ann.place(side="BUY", type="LIMIT_MAKER", price="51000", quantity="0.01")
    assert (maker.status_code, maker.json()["code"]) == (400, "ORDER_WOULD_TAKE")
    fok = ann.place(side="BUY", price="51000", quantity="0.06", time_in_force="FOK")
    assert fok.status_code == 201 and fok.json()["order"]["status"] == "EXPIRED"
    assert fok.json()["fills"] == []
    ioc = ann.place(side="BUY", price="51000", quantity="0.06", time_in_force="IOC")
    assert ioc.json()["order"]["status"] == "EXPIRED" and ioc.json()["order"]["filled"] == "0.05"

    # A stop rests untriggered until the last price reaches it, then trades.
    stop = ann.place(side="BUY", type="STOP_LOSS_LIMIT", price="53000", stop_price="52500",
                     quantity="0.1")  # fmt: skip
    assert stop.status_code == 201 and stop.json()["order"]["status"] == "UNTRIGGERED"
    trigger = ann.place(side="BUY", price="52500", quantity="0.01")
    assert trigger.json()["order"]["status"] == "FILLED"
    fired = ann.http.get(f"/orders/{stop.json()['order']['order_id']}").json()
    assert fired["status"] == "FILLED" and fired["average_price"] == "52550"

    # Someone else's order is not found; cancelling twice says it is not open any more.
    assert ann.http.delete(f"/orders/{ids[2]}").status_code == 404
    cancelled = bob.http.delete(f"/orders/{ids[2]}")
    assert cancelled.status_code == 200
    # The answer (built from memory) agrees with the projection, field for field.
    projected = bob.http.get(f"/orders/{ids[2]}").json()
    assert {**cancelled.json(), "updated_at": 0} == {**projected, "updated_at": 0}
    assert (projected["status"], projected["filled"], projected["fee"]) == (
        "CANCELED",
        "0.01",
        "0.53",
    )
    twice = bob.http.delete(f"/orders/{ids[2]}")
    assert (twice.status_code, twice.json()["code"]) == (409, "ORDER_NOT_OPEN")
    bob.place(side="SELL", price="70000", quantity="0.2")
    bob.place(side="SELL", price="71000", quantity="0.2")
    everything = bob.http.delete("/orders", params={"market": "BTC-USDT"})
    assert len(everything.json()["cancelled"]) == 2
    assert bob.http.get("/orders").json() == []
    assert bob.balances()["BTC"][1] == "0"


def test_market_orders_follow_binances_entry_rules(
    traders: tuple[Trader, Trader, Server],
) -> None:
    """Issue 15 over HTTP: a MARKET sell by quote amount, refused on an empty book; a
    MARKET buy the account cannot pay for in full refused, nothing changed."""
    ann, bob, _ = traders
    empty = bob.place(side="SELL", type="MARKET", quote_quantity="2500")
    assert (empty.status_code, empty.json()["code"]) == (400, "NO_LIQUIDITY"), empty.text

    assert ann.place(side="BUY", price="50000", quantity="0.1").status_code == 201
    sold = bob.place(side="SELL", type="MARKET", quote_quantity="2500")
    assert sold.status_code == 201, sold.text
    order = sold.json()["order"]
    # 2500 USDT at 50000 is exactly 0.05 BTC: received in full, never more.
    assert (order["side"], order["quote_quantity"], order["status"]) == ("SELL", "2500", "FILLED")
    assert (order["filled"], order["filled_quote"]) == ("0.05", "2500")
    assert bob.balances()["BTC"] == ("1.95", "0")

    assert bob.place(side="SELL", price="60000", quantity="1.9").status_code == 201
    before = ann.balances()
    refused = ann.place(side="BUY", type="MARKET", quantity="1.9")
    assert (refused.status_code, refused.json()["code"]) == (400, "INSUFFICIENT_BALANCE")
    assert refused.json()["message"] == "order needs 114000 USDT, 95000 USDT available"
    assert ann.balances() == before


BAD_ORDERS = [
    ({"market": "DOGE-USDT", "side": "BUY", "price": "1", "quantity": "1"}, 404, "UNKNOWN_MARKET"),
    ({"side": "BUY", "price": "0", "quantity": "0.1"}, 400, "INVALID_PRICE"),
    ({"side": "BUY", "price": "-5", "quantity": "0.1"}, 400, "INVALID_PRICE"),
    ({"side": "BUY", "price": "50000.001", "quantity": "0.1"}, 400, "INVALID_PRICE"),
    ({"side": "BUY", "price": "50000", "quantity": "0.000001"}, 400, "INVALID_QUANTITY"),
    ({"side": "BUY", "price": "1e5", "quantity": "0.1"}, 400, "INVALID_PRICE"),
    ({"side": "BUY", "price": "9" * 30, "quantity": "0.1"}, 400, "INVALID_PRICE"),
    ({"side": "BUY", "price": 50000, "quantity": "0.1"}, 400, "INVALID_REQUEST"),
    ({"side": "BUY", "price": "50000", "quantity": "0.1", "leverage": 5}, 400, "INVALID_REQUEST"),
    ({"side": "HOLD", "price": "50000", "quantity": "0.1"}, 400, "INVALID_REQUEST"),
    ({"side": "BUY", "price": "50000", "quantity": "100"}, 400, "INSUFFICIENT_BALANCE"),
]


def test_bad_orders_answer_4xx_and_change_nothing(traders: tuple[Trader, Trader, Server]) -> None:
    ann, _, server = traders
    before = ann.balances()
    for order, status, code in BAD_ORDERS:
        answer = ann.http.post("/orders", json={"market": "BTC-USDT", **order})
        assert (answer.status_code, answer.json()["code"]) == (status, code), (order, answer.text)
    for path, code in (("/orders/99999999999999999999", 400), ("/orders/-1", 400),
                       ("/orders/abc", 400), ("/orders/12345", 404)):  # fmt: skip
        assert ann.http.delete(path).status_code == code, path
    assert ann.balances() == before
    assert ann.http.get("/orders/history").json()["items"] == []
    anonymous = httpx.post(f"{server.url}/api/v1/dev/faucet", json={"asset": "BTC", "amount": "1"})
    assert anonymous.status_code == 401


REFUSALS_IN_UNITS = [
    # Engine rejections, in the market's units: USDT has 8 ledger decimals here, so the
    # min notional below was "500000000" and the balance "10000000000000 atoms".
    ({"side": "BUY", "price": "100", "quantity": "0.01"}, "NOTIONAL_TOO_SMALL",
     "order value 1 USDT is below min notional 5 USDT"),
    ({"side": "BUY", "price": "50000", "quantity": "100"}, "INSUFFICIENT_BALANCE",
     "order needs 5000000 USDT, 100000 USDT available"),
    ({"side": "BUY", "price": "50000", "quantity": "9000.00001"}, "INVALID_QUANTITY",
     "quantity must be within 0.00001..9000 BTC, got 9000.00001 BTC"),
    # A stop-market buy by quote amount is refused, as on Binance.
    ({"side": "BUY", "type": "STOP_LOSS", "stop_price": "60000", "quote_quantity": "100"},
     "INVALID_ORDER",
     "quote_quantity is only for MARKET orders; a STOP_LOSS BUY takes a quantity"),
    ({"side": "BUY", "type": "TAKE_PROFIT", "stop_price": "40000", "quote_quantity": "100"},
     "INVALID_ORDER",
     "quote_quantity is only for MARKET orders; a TAKE_PROFIT BUY takes a quantity"),
    # Refused at the edge: the message names the field that is off its step.
    ({"side": "SELL", "price": "50000", "quantity": "0.1", "iceberg_quantity": "0.000001"},
     "INVALID_ICEBERG_QUANTITY",
     "iceberg_quantity 0.000001 is not a multiple of 0.00001; round it yourself"),
]  # fmt: skip


def test_refusals_speak_the_markets_units(traders: tuple[Trader, Trader, Server]) -> None:
    ann, _, _ = traders
    before = ann.balances()
    for order, code, message in REFUSALS_IN_UNITS:
        answer = ann.place(**order)
        assert (answer.status_code, answer.json()) == (400, {"code": code, "message": message})
    faucet = ann.http.post("/dev/faucet", json={"asset": "BTC", "amount": "1000001"})
    assert faucet.json() == {
        "code": "INVALID_AMOUNT", "message": "the faucet gives at most 1000000 BTC"
    }  # fmt: skip
    assert ann.balances() == before
    assert ann.http.get("/orders/history").json()["items"] == []


def test_the_faucet_needs_dev_mode(
    tmp_path: Path, env: dict[str, str], servers: list[Server]
) -> None:
    create_user(tmp_path / "data", "ann@example.com")
    server = Server(tmp_path / "data", env)
    servers.append(server)
    server.wait_ready()
    ann = Trader(server.url, "ann@example.com")
    refused = ann.http.post("/dev/faucet", json={"asset": "BTC", "amount": "1"})
    assert (refused.status_code, refused.json()["code"]) == (403, "FAUCET_DISABLED")
    assert ann.balances() == {}


def test_portfolio_average_cost_and_pnl(traders: tuple[Trader, Trader, Server]) -> None:
    ann, bob, _ = traders
    bob.place(side="SELL", price="50000", quantity="0.2")
    ann.place(side="BUY", price="50000", quantity="0.2")  # 0.1998 BTC after fee, 10000 USDT
    (bought,) = ann.http.get("/portfolio").json()
    assert bought == {
        "asset": "BTC", "market": "BTC-USDT", "quote_asset": "USDT", "balance": "0.1998",
        "position": "0.1998", "average_cost": "50050.05005005", "last_price": "50000",
        "realised_pnl": "0", "unrealised_pnl": "-10",
    }  # fmt: skip
    bob.place(side="BUY", price="51000", quantity="0.1")
    ann.place(side="SELL", price="51000", quantity="0.1")  # 5100 USDT less 5.1 fee
    (after,) = ann.http.get("/portfolio").json()
    # The sell takes 10000 x 0.1/0.1998 = 5005.005005005 of the cost, rounded half-even to
    # the atom (5005.00500501) and realises 5094.9 less that; the 4994.99499499 of cost
    # left over 0.0998 BTC is the new average, and the rest is valued at the last price.
    assert (after["position"], after["average_cost"]) == ("0.0998", "50050.05005")
    assert (after["realised_pnl"], after["unrealised_pnl"]) == ("89.89499499", "94.80500501")
    # Bob's BTC came from the faucet: no known cost, nothing realised on selling it.
    (bobs,) = bob.http.get("/portfolio").json()
    assert (bobs["position"], bobs["realised_pnl"], bobs["average_cost"]) == (
        "0.0999",
        "0",
        "51051.05105105",
    )


def test_amending_a_partly_filled_order_sets_its_new_total(
    traders: tuple[Trader, Trader, Server],
) -> None:
    """docs/trading.md "Amending an order": ``quantity`` is the new total, fills included;
    a smaller quantity at the same price keeps the order's place in the queue, a larger
    one sends it to the back."""
    ann, bob, server = traders
    amend = httpx.get(f"{server.url}/openapi.json").json()["paths"]["/api/v1/orders/{order_id}"]
    assert "new **total**, fills included" in amend["patch"]["description"]

    def sell(quantity: str) -> int:
        placed = bob.place(side="SELL", price="50000", quantity=quantity)
        assert placed.status_code == 201, placed.text
        return int(placed.json()["order"]["order_id"])

    def taken_from(quantity: str) -> list[tuple[int, str]]:
        taking = ann.place(side="BUY", price="50000", quantity=quantity, time_in_force="IOC")
        assert taking.status_code == 201, taking.text
        return [(f["order_id"], f["quantity"]) for f in bob.http.get("/trades").json()["items"]]

    first, second = sell("1"), sell("0.5")  # first ahead of second at 50000
    assert taken_from("0.4") == [(first, "0.4")]
    amended = bob.http.patch(f"/orders/{first}", json={"quantity": "0.7"})
    assert amended.status_code == 200, amended.text
    order = amended.json()
    assert (order["quantity"], order["filled"], order["status"]) == (
        "0.7",
        "0.4",
        "PARTIALLY_FILLED",
    )
    # 0.3 of the first and 0.5 of the second stay locked; 0.4 was sold.
    assert bob.balances()["BTC"] == ("0.8", "0.8")
    # Smaller at the same price: still first in the queue, so it fills before the second.
    assert taken_from("0.3")[0] == (first, "0.3")
    assert bob.http.get(f"/orders/{first}").json()["status"] == "FILLED"

    # Larger: to the back of the level, behind an order placed after it.
    third = sell("0.2")
    assert bob.http.patch(f"/orders/{second}", json={"quantity": "0.6"}).status_code == 200
    assert taken_from("0.2")[0] == (third, "0.2")
    assert taken_from("0.1")[0] == (second, "0.1")
    # The new total must exceed what is filled: 0.1 of the second is.
    refused = bob.http.patch(f"/orders/{second}", json={"quantity": "0.1"})
    assert (refused.status_code, refused.json()["code"]) == (400, "INVALID_QUANTITY")
    finished = bob.http.patch(f"/orders/{first}", json={"quantity": "0.5"})
    assert (finished.status_code, finished.json()["code"]) == (409, "ORDER_NOT_OPEN")
