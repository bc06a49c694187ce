"""Fire concurrent wrong logins at a running `mercato serve` over real HTTP and report how
many passwords it checked before the account locked, and the account's state after.

    python bench/lockout_probe.py --url http://127.0.0.1:8000 \\
        --database-url sqlite+aiosqlite:///mercato-data/mercato.db \\
        --email ann@example.com --password 'correct-horse-9' --burst 30

The account must exist and be unlocked. Each login goes on a connection of its own, all
sent at once. A checked password answers 401 INVALID_CREDENTIALS (the login history
records it as "wrong credentials"); one refused by the lockout answers 403 ACCOUNT_LOCKED
without being checked. With ``--password``, the right password is tried once the burst is
answered: it must be refused while the lock holds. The server's auth rate budget (burst
20 per IP by default) answers 429 before the lockout does: run the server with a config
that raises it or turns rate limits off. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import func, select

from mercato.store import create_engine
from mercato.store.tables import login_history, users


async def _burst(url: str, email: str, burst: int) -> Counter[str]:
    limits = httpx.Limits(max_connections=burst)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        answers = await asyncio.gather(*(
            http.post("/api/v1/auth/login", json={"email": email, "password": f"wrong-{i}-pass"})
            for i in range(burst)
        ))  # fmt: skip
    return Counter(f"{a.status_code} {a.json().get('code', '')}" for a in answers)


async def _state(database_url: str, email: str, since_ms: int) -> dict[str, Any]:
    db = create_engine(database_url)
    try:
        async with db.connect() as connection:
            user = (await connection.execute(select(users).where(users.c.email == email))).one()
            reasons = await connection.execute(
                select(login_history.c.reason, func.count())
                .where(login_history.c.user_id == user.id, login_history.c.created_at >= since_ms)
                .group_by(login_history.c.reason)
            )
            return {
                "failed_logins": user.failed_logins,
                "locked": user.locked_until is not None and user.locked_until > time.time() * 1000,
                "login_history": dict(sorted((r, n) for r, n in reasons)),
            }
    finally:
        await db.dispose()


async def probe(
    url: str, database_url: str, email: str, password: str | None, burst: int
) -> dict[str, Any]:
    started_ms = int(time.time() * 1000)
    answers = await _burst(url, email, burst)
    report: dict[str, Any] = {
        "burst": burst,
        "passwords_checked": answers["401 INVALID_CREDENTIALS"],
        "refused_as_locked": answers["403 ACCOUNT_LOCKED"],
        "answers": dict(answers),
    }
    if password is not None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            right = await http.post(
                "/api/v1/auth/login", json={"email": email, "password": password}
            )
        report["right_password_after"] = f"{right.status_code} {right.json().get('code', '')}"
    report.update(await _state(database_url, email, started_ms))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--database-url", required=True, help="the server's store")
    parser.add_argument("--email", required=True, help="an existing, unlocked account")
    parser.add_argument("--password", help="its right password, tried after the burst")
    parser.add_argument("--burst", type=int, default=30, help="concurrent wrong logins")
    args = parser.parse_args()
    report = asyncio.run(probe(args.url, args.database_url, args.email, args.password, args.burst))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
