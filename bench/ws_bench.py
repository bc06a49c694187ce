"""WebSocket fan-out benchmark on one machine: a server process (the real service and
app under uvicorn, rate limits off) whose engine is kept busy by a generated order flow
submitted straight to its sequencer, and this process running the subscribers
(mercato.marketdata.wsbench.run_ws_bench). Prints one JSON line.

    python bench/ws_bench.py --subscribers 500 --seconds 10 --rate 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path


def serve(data_dir: str, port: int, start: object, rate: int) -> None:
    """The server process: the exchange, plus the flow once ``start`` is set."""
    import uvicorn

    from mercato.api.app import create_app
    from mercato.config import load_config
    from mercato.core.commands import CreditDeposit
    from mercato.flow import generate_flow
    from mercato.service import ExchangeService

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MERCATO_", "DATABASE"))}
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    config_file = Path(data_dir) / "bench.toml"
    config_file.write_text("[rate_limits]\nenabled = false\n")
    config = load_config(config_file, env=env, data_dir=data_dir)
    service = ExchangeService(config, env=env)

    async def main() -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(service), host="127.0.0.1", port=port, log_config=None, access_log=False
            )
        )
        task = asyncio.create_task(server.serve())
        while not service.ready:
            await asyncio.sleep(0.05)
        assert service.sequencer is not None
        users = 8
        for user in range(1, users + 1):
            for asset in ("BTC", "ETH", "USDT"):
                await service.sequencer.submit(
                    CreditDeposit(user, asset, 10**16, f"b{user}{asset}")
                )
        first_order = service.sequencer.engine.next_order_id
        _, flow = generate_flow(7, 2_000_000, users=users, first_order_id=first_order)
        while not start.is_set():  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)
        # Submit at ``rate`` commands per second, in chunks every 10 ms.
        chunk = max(1, rate // 100)
        index = 0
        next_at = time.perf_counter()
        while index < len(flow) and not server.should_exit:
            batch = flow[index : index + chunk]
            index += chunk
            for command in batch:
                service.sequencer.submit_nowait(command)
            next_at += 0.01
            delay = next_at - time.perf_counter()
            await asyncio.sleep(max(0.0, delay))
        await task

    asyncio.run(main())


async def bench(url: str, subscribers: int, seconds: float, start: object) -> dict[str, object]:
    from mercato.marketdata.wsbench import run_ws_bench

    result = await run_ws_bench(url, subscribers, seconds, "BTC-USDT", start.set)  # type: ignore[attr-defined]
    return result.summary()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=2000, help="flow commands per second")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        start = multiprocessing.Event()
        server = multiprocessing.Process(target=serve, args=(tmp + "/data", port, start, args.rate))
        server.start()
        try:
            import httpx

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            time.sleep(1)  # deposits
            summary = asyncio.run(
                bench(f"ws://127.0.0.1:{port}/ws", args.subscribers, args.seconds, start)
            )
            summary["flow_commands_per_s"] = args.rate
            print(json.dumps(summary))
        finally:
            server.terminate()
            server.join(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
