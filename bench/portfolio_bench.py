"""GET /portfolio for a trader with a long history: how long one answer takes.

A server (`mercato serve --dev`, rate limits off) on a temporary data directory; trader 0
rests large orders, alternately buying and selling at prices that move every round, and
trader 1 takes them in small IOC pieces, so trader 0 collects ``--fills`` fills with many
partial sells (the case that made exact fractions grow). Then trader 0 asks for the
portfolio ``--repeat`` times. Prints one JSON line.

    python bench/portfolio_bench.py --fills 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

from mercato.apibench import MARKET, BenchServer, RawHttp
from mercato.runtime import run_fast

PIECE = "0.002"  # BTC per taker order: one fill each for both traders
PIECES_PER_ROUND = 200
CONNECTIONS = 8


async def trade(url: str, maker: str, taker: str, fills: int) -> int:
    host, port = url.removeprefix("http://").split(":")
    made = RawHttp(host, int(port), maker)
    takers = [RawHttp(host, int(port), taker) for _ in range(CONNECTIONS)]
    for client in (made, *takers):
        await client.open()
    done, round_ = 0, 0
    while done < fills:
        round_ += 1
        # trader 0 buys 200 pieces, sells 133, buys 133, sells 200, ...: partial sells,
        # and over four rounds as much sold as bought
        buying = round_ % 2 == 1
        pieces = PIECES_PER_ROUND if round_ % 4 in (0, 1) else PIECES_PER_ROUND * 2 // 3
        price = str(50_000 + 37 * (round_ % 29))
        quantity = f"{pieces * 0.002:.3f}"
        side = "BUY" if buying else "SELL"
        order = {"market": MARKET, "side": side, "price": price, "quantity": quantity}
        status, body = await made.request("POST", "/api/v1/orders", msgspec.json.encode(order))
        assert status == 201, body
        take = msgspec.json.encode(
            {"market": MARKET, "side": "SELL" if buying else "BUY", "price": price,
             "quantity": PIECE, "time_in_force": "IOC"}
        )  # fmt: skip

        async def taker_loop(client: RawHttp, share: int, take: bytes) -> None:
            for _ in range(share):
                status, body = await client.request("POST", "/api/v1/orders", take)
                assert status == 201, body

        shares = [pieces // CONNECTIONS + (i < pieces % CONNECTIONS) for i in range(CONNECTIONS)]
        await asyncio.gather(*(taker_loop(c, n, take) for c, n in zip(takers, shares, strict=True)))
        done += pieces
    for client in (made, *takers):
        await client.close()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mercato-bench-portfolio-") as tmp:
        server = BenchServer(Path(tmp) / "data", users=2)
        try:
            server.start()
            maker, taker = server.funded_tokens()
            began = time.perf_counter()
            fills = run_fast(trade(server.url, maker, taker, args.fills))
            trading_s = time.perf_counter() - began
            timings = []
            auth = {"authorization": f"Bearer {maker}"}
            with httpx.Client(base_url=f"{server.url}/api/v1", timeout=600) as http:
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    answer = http.get("/portfolio", headers=auth)
                    timings.append(time.perf_counter() - started)
                    answer.raise_for_status()
            (holding,) = answer.json()
        finally:
            server.stop()
    print(json.dumps({
        "fills": fills, "trading_seconds": round(trading_s, 1),
        "portfolio_median_ms": round(statistics.median(timings) * 1000, 1),
        "portfolio_max_ms": round(max(timings) * 1000, 1),
        "position": holding["position"], "realised_pnl": holding["realised_pnl"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
