"""`mercato bench custody`: deposits detected and credited, withdrawals signed and sent,
per second, on a real Anvil node (docs/benchmarks.md, "Custody").

The bench starts Anvil with manual mining (``--no-mining``: the bench decides what goes
into which block), deploys MercatoToken (6 decimals, the "USDT" of the run) and starts an
in-process exchange on a temporary SQLite data directory whose ``[custody]`` section
points at the node, with ``run_in_serve = false``: the bench drives the deposit watcher
and the sender itself, pass by pass, as the runtime's loops would.

1. N users, each given a deposit address (``custody.addresses.deposit_address``).
2. M deposits (half ETH, half USDT, random amounts) from Anvil's dev accounts to random
   deposit addresses: raw signed transactions in JSON-RPC batches, mined into blocks of
   ``block_txs`` transactions, then ``confirmations`` more blocks.
3. Timed: ``DepositWatcher.run_once`` until every deposit is CREDITED. Every JSON-RPC
   request the adapter makes is counted (a batch is one request), to show that a scan
   costs requests per block and per match, not per watched address; the same range is
   then scanned once more watching ten times as many addresses, which must cost the same
   but for one ``eth_getLogs`` per extra 1000 addresses.
4. W withdrawals requested through the Withdrawals service (engine holds placed), the
   hot wallet funded; timed: ``Sender.run_once`` until all are BROADCAST (nonce, signing,
   store commit and broadcast of each), then, once mined and deep enough, until all are
   COMPLETED (holds settled).

Amounts are checked, not only counted: every user's credited balance must equal the sum
of their deposits in ledger atoms, and every withdrawal must leave the user with the
hold settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from mercato.config import load_config, load_secrets
from mercato.custody.addresses import deposit_address
from mercato.custody.chains.base import KeyRef, Watched
from mercato.custody.chains.evm import EvmAdapter
from mercato.custody.keys import generate_mnemonic, init_seed
from mercato.custody.sender import Sender
from mercato.custody.signer import LocalSeedSigner
from mercato.custody.units import split_deposit
from mercato.custody.watcher import DepositWatcher, WatchedAsset
from mercato.service import ExchangeService
from mercato.store import create_engine, identity, migrate
from mercato.store.tables import (
    custody_address_book,
    custody_deposits,
    custody_outgoing,
    custody_withdrawals,
    users,
)

# Anvil's default dev mnemonic; its accounts pay the deposits.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNTS = 10
CHAIN = "ethereum"
CHAIN_ID = 31337
STARTUP_SECONDS = 20.0
GWEI = 10**9
MAX_FEE = 100 * GWEI  # far above Anvil's base fee (1 gwei, falling on light blocks)
TOKEN_TRANSFER_GAS = 80_000  # MercatoToken.transfer to a fresh holder takes ~52k
SEND_BATCH = 200  # raw transactions per eth_sendRawTransaction batch
ETH_WITHDRAWAL = "0.01"
USDT_WITHDRAWAL = "5"
MINT_SELECTOR = keccak(text="mint(address,uint256)")[:4]
TRANSFER_SELECTOR = keccak(text="transfer(address,uint256)")[:4]


class AnvilMissing(RuntimeError):
    """No Anvil binary where the bench looks for one."""


class BenchFailed(RuntimeError):
    """The run did not end as it must (a deposit not credited, a block short of
    transactions): no figures are printed for a run that did not do its work."""


def anvil_binary() -> str:
    """``MERCATO_ANVIL``, else ``node_modules/.bin/anvil`` under the current directory or
    the package's source tree (``npm ci`` installs it), else ``anvil`` on PATH."""
    configured = os.environ.get("MERCATO_ANVIL")
    if configured:
        if not Path(configured).is_file():
            raise AnvilMissing(f"MERCATO_ANVIL={configured} is not a file")
        return configured
    package_root = Path(__file__).resolve().parents[2]
    for root in (Path.cwd(), package_root):
        local = root / "node_modules" / ".bin" / "anvil"
        if local.is_file():
            return str(local)
    found = shutil.which("anvil")
    if found is None:
        raise AnvilMissing(
            "no Anvil: set MERCATO_ANVIL, run `npm ci` in the repository (it installs "
            "node_modules/.bin/anvil), or put anvil (Foundry) on PATH"
        )
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Node:
    """A running Anvil and the JSON-RPC the bench's set-up uses (never the adapter's)."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.process = process
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self._session.close()
        # npm's `anvil` is a node script running the real binary as a child, and does
        # not pass SIGKILL on: the whole process group goes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    async def _post(self, body: object) -> Any:
        async with self._session.post(self.url, json=body) as response:
            return await response.json(content_type=None)

    async def rpc(self, method: str, *params: Any) -> Any:
        answer = await self._post({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        if "error" in answer:
            raise BenchFailed(f"{method}: {answer['error']}")
        return answer["result"]

    async def batch(self, method: str, params: Sequence[Sequence[Any]]) -> list[Any]:
        body = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": list(p)}
            for i, p in enumerate(params)
        ]
        answers = sorted(await self._post(body), key=lambda a: a["id"])
        errors = [a["error"] for a in answers if "error" in a]
        if errors:
            raise BenchFailed(f"{method}: {len(errors)} refused, first: {errors[0]}")
        return [a["result"] for a in answers]

    async def mine(self, blocks: int = 1) -> None:
        await self.rpc("anvil_mine", hex(blocks))

    async def head(self) -> int:
        return int(await self.rpc("eth_blockNumber"), 16)

    async def answers(self) -> bool:
        try:
            return bool(await self.rpc("eth_chainId"))
        except (aiohttp.ClientError, OSError, BenchFailed):
            return False

    async def mine_all(self, expected: int) -> int:
        """Mine one block and check that it holds the ``expected`` pending transactions;
        the block's height."""
        await self.mine()
        block = await self.rpc("eth_getBlockByNumber", "latest", False)
        if len(block["transactions"]) != expected:
            raise BenchFailed(
                f"block {int(block['number'], 16)} holds {len(block['transactions'])} "
                f"transactions, {expected} were sent"
            )
        return int(block["number"], 16)


@contextlib.asynccontextmanager
async def running_anvil(binary: str) -> AsyncIterator[Node]:
    """Anvil on a free port with manual mining, in its own process group, killed on exit."""
    port = _free_port()
    process = subprocess.Popen(
        [
            *(binary, "--host", "127.0.0.1", "--port", str(port), "--silent", "--no-mining"),
            *("--mnemonic", DEV_MNEMONIC, "--accounts", str(DEV_ACCOUNTS)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    node = Node(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not await node.answers():
            if process.poll() is not None:
                raise AnvilMissing(f"{binary} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise AnvilMissing(f"{binary}: no answer on {node.url} in {STARTUP_SECONDS}s")
            await asyncio.sleep(0.05)
        yield node
    finally:
        await node.close()


class DevWallets:
    """Anvil's dev accounts, signing raw transactions with their own nonces."""

    def __init__(self) -> None:
        Account.enable_unaudited_hdwallet_features()
        self.accounts = [
            Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
            for i in range(DEV_ACCOUNTS)
        ]
        self.nonces = [0] * DEV_ACCOUNTS

    def sign(self, sender: int, to: str | None, value: int, data: bytes, gas: int) -> str:
        transaction: dict[str, Any] = {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": self.nonces[sender],
            "gas": gas,
            "maxFeePerGas": MAX_FEE,
            "maxPriorityFeePerGas": GWEI,
            "value": value,
            "data": data,
        }
        if to is not None:
            transaction["to"] = to
        self.nonces[sender] += 1
        signed = self.accounts[sender].sign_transaction(transaction)
        return "0x" + bytes(signed.raw_transaction).hex()


def _call(selector: bytes, address: str, amount: int) -> bytes:
    return selector + int(address, 16).to_bytes(32, "big") + amount.to_bytes(32, "big")


async def deploy_token(node: Node, wallets: DevWallets) -> str:
    """MercatoToken "USDT" with 6 decimals, deployed from dev account 0; its address."""
    artifact = json.loads(
        (files("mercato.custody") / "contracts" / "MercatoToken.json").read_text()
    )
    bytecode = bytes.fromhex(artifact["bytecode"].removeprefix("0x"))
    arguments = abi_encode(["string", "string", "uint8"], ["Mercato USDT", "USDT", 6])
    txid = await node.rpc("eth_sendRawTransaction", wallets.sign(0, None, 0, bytecode + arguments,
                                                                 3_000_000))  # fmt: skip
    await node.mine_all(1)
    receipt = await node.rpc("eth_getTransactionReceipt", txid)
    return to_checksum_address(receipt["contractAddress"])


@dataclass(frozen=True)
class Deposit:
    sender: int  # dev account
    to: str
    asset: str  # ETH | USDT
    amount_chain: int


def plan_deposits(rng: random.Random, addresses: Sequence[str], count: int) -> list[Deposit]:
    """Half ETH (0.01-1 ETH, to the wei, so that dust exists), half USDT (1-1000)."""
    planned = []
    for i in range(count):
        to = rng.choice(addresses)
        if i % 2 == 0:
            planned.append(Deposit(i % DEV_ACCOUNTS, to, "ETH", rng.randrange(10**16, 10**18)))
        else:
            planned.append(Deposit(i % DEV_ACCOUNTS, to, "USDT", rng.randrange(10**6, 10**9)))
    return planned


class RpcCounter:
    """Counts the adapter's JSON-RPC: HTTP requests (a batch is one) and calls by method."""

    def __init__(self, adapter: EvmAdapter) -> None:
        self.requests = 0
        self.calls: Counter[str] = Counter()
        provider = adapter.provider
        single, batch = provider.make_request, provider.make_batch_request

        async def count_single(method: Any, params: Any) -> Any:
            self.requests += 1
            self.calls[str(method)] += 1
            return await single(method, params)

        async def count_batch(calls: Any) -> Any:
            self.requests += 1
            for method, _ in calls:
                self.calls[str(method)] += 1
            return await batch(calls)

        provider.make_request = count_single  # type: ignore[method-assign]
        provider.make_batch_request = count_batch  # type: ignore[method-assign,assignment]

    def take(self) -> tuple[int, dict[str, int]]:
        """The counts so far, and zero them."""
        taken = self.requests, dict(sorted(self.calls.items()))
        self.requests, self.calls = 0, Counter()
        return taken


CONFIG_TOML = """
[custody]
run_in_serve = false          # the bench drives the watcher and the sender
address_cooloff_seconds = 0

[[custody.chains]]
name = "{chain}"
kind = "evm"
rpc_url = "{url}"
confirmations = {confirmations}
start_height = {start_height}

[[custody.assets]]
symbol = "ETH"
chain = "{chain}"
chain_decimals = 18
min_deposit = "0.001"
withdrawal_fee = "0.0005"
min_withdrawal = "0.001"

[[custody.assets]]
symbol = "USDT"
chain = "{chain}"
contract = "{token}"
chain_decimals = 6
min_deposit = "1"
withdrawal_fee = "1"
min_withdrawal = "1"
"""


@dataclass(frozen=True)
class BenchSizes:
    addresses: int = 1000
    deposits: int = 2000
    withdrawals: int = 200
    block_txs: int = 200
    confirmations: int = 12
    seed: int = 1


class CustodyBench:
    """One run over a node and a temporary data directory (see the module doc)."""

    def __init__(self, node: Node, data_dir: Path, sizes: BenchSizes) -> None:
        self.node = node
        self.data_dir = data_dir
        self.sizes = sizes
        self.rng = random.Random(sizes.seed)
        self.wallets = DevWallets()
        self.mnemonic = generate_mnemonic()
        self.hot = LocalSeedSigner(self.mnemonic.seed()).address(KeyRef("evm", "hot", 0))
        self.env = {"MERCATO_MASTER_KEY": os.urandom(32).hex()}
        self.figures: dict[str, Any] = {
            "addresses": sizes.addresses,
            "deposits": sizes.deposits,
            "withdrawals": sizes.withdrawals,
            "block_txs": sizes.block_txs,
            "confirmations": sizes.confirmations,
        }

    # -- set-up ---------------------------------------------------------------------------

    async def fund(self, token: str) -> None:
        """USDT for every dev account (they pay the USDT deposits) and for the hot wallet,
        and ETH for the hot wallet (the withdrawals' amounts and gas)."""
        mints = [
            self.wallets.sign(0, token, 0, _call(MINT_SELECTOR, account.address, 10**15), 100_000)
            for account in self.wallets.accounts
        ]
        mints.append(self.wallets.sign(0, token, 0, _call(MINT_SELECTOR, self.hot, 10**15),
                                       100_000))  # fmt: skip
        await self.node.batch("eth_sendRawTransaction", [[raw] for raw in mints])
        await self.node.mine_all(len(mints))
        await self.node.rpc("anvil_setBalance", self.hot, hex(10**24))

    async def start_service(self, token: str) -> ExchangeService:
        config_file = self.data_dir / "custody.toml"
        config_file.write_text(
            CONFIG_TOML.format(
                chain=CHAIN,
                url=self.node.url,
                confirmations=self.sizes.confirmations,
                start_height=await self.node.head() + 1,
                token=token,
            )
        )
        config = load_config(config_file, env=self.env, data_dir=str(self.data_dir / "data"))
        config.data_dir.mkdir(parents=True)
        secrets = load_secrets(config, self.env)
        await migrate(config.database_url)
        await identity.claim(config.database_url, config.data_dir)
        db = create_engine(config.database_url)
        try:
            await init_seed(db, secrets.master_key, self.mnemonic)
        finally:
            await db.dispose()
        service = ExchangeService(config, self.env)
        await service.start()
        return service

    async def make_users(self, service: ExchangeService) -> list[int]:
        assert service.database is not None
        now = int(time.time() * 1000)
        rows = [
            {
                "email": f"bench{i}@example.test",
                "email_skeleton": f"bench{i}@example.test",
                "password_hash": "-",
                "role": "user",
                "email_verified_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(self.sizes.addresses)
        ]
        async with service.database.begin() as connection:
            await connection.execute(users.insert(), rows)
            found = await connection.execute(sa.select(users.c.id).order_by(users.c.id))
            return [int(user_id) for user_id in found.scalars()]

    async def make_addresses(self, service: ExchangeService, user_ids: list[int]) -> dict[str, int]:
        """A deposit address per user (timed: derivation and the counter's transaction)."""
        assert service.database is not None and service.custody is not None
        signer = service.custody.signer
        assert signer is not None
        started = time.perf_counter()
        owners = {}
        for user_id in user_ids:
            address = await deposit_address(service.database, signer, "evm", CHAIN, user_id)
            owners[address] = user_id
        elapsed = time.perf_counter() - started
        self.figures["addresses_per_sec"] = round(len(user_ids) / elapsed, 1)
        return owners

    async def send_deposits(self, token: str, planned: list[Deposit]) -> tuple[int, int]:
        """Every deposit signed, sent in batches and mined ``block_txs`` to a block, then
        the confirmations mined; the first and last deposit blocks."""
        first = last = 0
        for offset in range(0, len(planned), self.sizes.block_txs):
            chunk = planned[offset : offset + self.sizes.block_txs]
            raws = [self._signed(token, deposit) for deposit in chunk]
            for start in range(0, len(raws), SEND_BATCH):
                batch = raws[start : start + SEND_BATCH]
                await self.node.batch("eth_sendRawTransaction", [[raw] for raw in batch])
            last = await self.node.mine_all(len(chunk))
            first = first or last
        await self.node.mine(self.sizes.confirmations)
        return first, last

    def _signed(self, token: str, deposit: Deposit) -> str:
        if deposit.asset == "ETH":
            return self.wallets.sign(deposit.sender, deposit.to, deposit.amount_chain, b"", 21_000)
        data = _call(TRANSFER_SELECTOR, deposit.to, deposit.amount_chain)
        return self.wallets.sign(deposit.sender, token, 0, data, TOKEN_TRANSFER_GAS)

    # -- deposits -------------------------------------------------------------------------

    async def credit_deposits(
        self, service: ExchangeService, adapter: EvmAdapter, counter: RpcCounter
    ) -> None:
        """Timed: watcher passes from its first until every deposit is CREDITED."""
        assert service.custody is not None and service.port is not None
        assert service.projection is not None and service.database is not None
        custody = service.custody
        signer = custody.signer
        assert signer is not None
        watched = [
            WatchedAsset(asset, service.port.view.asset(asset.symbol).decimals)  # type: ignore[union-attr]
            for asset in custody.assets_of(CHAIN)
        ]
        watcher = DepositWatcher(
            service.database, adapter, custody.config.chain(CHAIN), watched,
            service.port, service.projection, signer,
        )  # fmt: skip
        counter.take()
        passes = blocks = credited = 0
        started = time.perf_counter()
        while credited < self.sizes.deposits:
            report = await watcher.run_once()
            passes += 1
            blocks += report.blocks
            credited = await _count(service, custody_deposits, "CREDITED")
            if passes > 20:
                raise BenchFailed(f"{credited} of {self.sizes.deposits} credited after 20 passes")
        elapsed = time.perf_counter() - started
        requests, calls = counter.take()
        self.figures |= {
            "deposits_credited": credited,
            "deposit_seconds": round(elapsed, 3),
            "deposits_per_sec": round(credited / elapsed, 1),
            "watcher_passes": passes,
            "blocks_scanned": blocks,
            "scan_rpc_requests": requests,
            "scan_rpc_calls": calls,
        }

    async def scan_with_more_addresses(
        self, adapter: EvmAdapter, counter: RpcCounter, owners: dict[str, int], first: int,
        last: int,
    ) -> None:  # fmt: skip
        """The deposit blocks scanned twice, watching our N addresses and then 10 N (the N
        and 9 N strangers): the requests differ only by eth_getLogs, one per 1000."""
        strangers = {to_checksum_address(os.urandom(20).hex()) for _ in range(9 * len(owners))}
        for label, addresses in (("n", set(owners)), ("10n", set(owners) | strangers)):
            watched = Watched(frozenset(addresses), adapter.assets, frozenset({self.hot}))
            counter.take()
            found = sum(len(block.incoming) for block in await adapter.scan(first, last, watched))
            requests, calls = counter.take()
            self.figures |= {
                f"rescan_{label}_addresses": len(addresses),
                f"rescan_{label}_requests": requests,
                f"rescan_{label}_calls": calls,
                f"rescan_{label}_found": found,
            }
        self.figures["rescan_blocks"] = last - first + 1

    def expected_credits(
        self, planned: list[Deposit], owners: dict[str, int], decimals: dict[str, int]
    ) -> dict[tuple[int, str], int]:
        chain_decimals = {"ETH": 18, "USDT": 6}
        expected: Counter[tuple[int, str]] = Counter()
        for deposit in planned:
            atoms, _ = split_deposit(
                deposit.amount_chain, chain_decimals[deposit.asset], decimals[deposit.asset]
            )
            expected[(owners[deposit.to], deposit.asset)] += atoms
        return dict(expected)

    # -- withdrawals ----------------------------------------------------------------------

    async def request_withdrawals(
        self, service: ExchangeService, expected: dict[tuple[int, str], int]
    ) -> list[str]:
        """W withdrawals (alternately ETH and USDT) by users who hold the asset, each to
        an address of their book (usable at once); requests timed."""
        assert service.withdrawals is not None and service.database is not None
        holders = {
            asset: sorted(user for (user, held), _ in expected.items() if held == asset)
            for asset in ("ETH", "USDT")
        }
        plans = []
        for i in range(self.sizes.withdrawals):
            asset = "ETH" if i % 2 == 0 else "USDT"
            user = holders[asset][(i // 2) % len(holders[asset])]
            to = to_checksum_address(os.urandom(20).hex())
            plans.append((user, asset, to))
        async with service.database.begin() as connection:
            await connection.execute(
                custody_address_book.insert(),
                [{"user_id": user, "chain": CHAIN, "address": to, "label": "",
                  "created_at": 0, "usable_at": 0} for user, _, to in plans],
            )  # fmt: skip
        started = time.perf_counter()
        ids = []
        for user, asset, to in plans:
            amount = ETH_WITHDRAWAL if asset == "ETH" else USDT_WITHDRAWAL
            record = await service.withdrawals.request(user, asset, amount, to, None)
            if record.status != "APPROVED":
                raise BenchFailed(f"withdrawal {record.withdrawal_id} is {record.status}")
            ids.append(record.withdrawal_id)
        elapsed = time.perf_counter() - started
        self.figures["withdrawal_requests_per_sec"] = round(len(ids) / elapsed, 1)
        return ids

    async def send_withdrawals(
        self, service: ExchangeService, adapter: EvmAdapter, counter: RpcCounter
    ) -> None:
        """Timed: sender passes until every withdrawal is BROADCAST; mined; then timed
        again until every one is COMPLETED (its hold settled)."""
        assert service.custody is not None and service.custody.signer is not None
        assert service.port is not None and service.database is not None
        sender = Sender(
            service.database, service.port, service.custody.config, {CHAIN: adapter},
            service.custody.signer,
        )  # fmt: skip
        total = self.sizes.withdrawals
        counter.take()
        broadcast, passes, seconds = await _passes_until(
            sender, lambda: _count(service, custody_withdrawals, "BROADCAST"), total
        )
        requests, calls = counter.take()
        self.figures |= {
            "withdrawals_broadcast": broadcast,
            "broadcast_seconds": round(seconds, 3),
            "withdrawals_broadcast_per_sec": round(broadcast / seconds, 1),
            "sender_passes_broadcast": passes,
            "sender_rpc_requests_broadcast": requests,
            "sender_rpc_calls_broadcast": calls,
        }
        await self.node.mine_all(total)
        await self.node.mine(self.sizes.confirmations - 1)
        completed, passes, seconds = await _passes_until(
            sender, lambda: _count(service, custody_withdrawals, "COMPLETED"), total
        )
        requests, _ = counter.take()
        self.figures |= {
            "withdrawals_completed": completed,
            "complete_seconds": round(seconds, 3),
            "withdrawals_completed_per_sec": round(completed / seconds, 1),
            "sender_passes_complete": passes,
            "sender_rpc_requests_complete": requests,
        }

    async def check_ledger(
        self, service: ExchangeService, expected: dict[tuple[int, str], int]
    ) -> None:
        """Credits to the atom; settled holds; the hot wallet's nonces 0..W-1."""
        assert service.port is not None and service.database is not None
        view = service.port.view
        credited = {key: sum(view.balance(*key)) for key in expected}
        async with service.database.connect() as connection:
            taken = await connection.execute(
                sa.select(custody_withdrawals.c.user_id, custody_withdrawals.c.asset,
                          custody_withdrawals.c.amount + custody_withdrawals.c.fee,
                          custody_withdrawals.c.hold_state)
            )  # fmt: skip
            withdrawn: Counter[tuple[int, str]] = Counter()
            states: Counter[str] = Counter()
            for user, asset, total, hold_state in taken:
                withdrawn[(user, asset)] += int(total)
                states[str(hold_state)] += 1
            nonces = sorted(
                int(nonce)
                for nonce in (
                    await connection.execute(sa.select(custody_outgoing.c.nonce))
                ).scalars()
            )
        short = [key for key in expected if credited[key] + withdrawn[key] != expected[key]]
        self.figures |= {
            "ledger_matches_deposits": not short,
            "holds_settled": states["SETTLED"],
            "nonces_gapless": nonces == list(range(len(nonces))),
        }
        if short:
            raise BenchFailed(f"{len(short)} balances differ from their deposits, e.g. {short[0]}")


async def _count(service: ExchangeService, table: sa.Table, status: str) -> int:
    assert service.database is not None
    async with service.database.connect() as connection:
        found = await connection.scalar(
            sa.select(sa.func.count()).select_from(table).where(table.c.status == status)
        )
    return int(found or 0)


async def _passes_until(
    sender: Sender, count: Any, total: int, most: int = 20
) -> tuple[int, int, float]:
    """Sender passes until ``count()`` reaches ``total``: (reached, passes, seconds)."""
    passes = reached = 0
    started = time.perf_counter()
    while reached < total:
        if passes == most:
            raise BenchFailed(f"{reached} of {total} after {most} sender passes")
        await sender.run_once()
        passes += 1
        reached = await count()
    return reached, passes, time.perf_counter() - started


async def run_custody_bench(sizes: BenchSizes) -> dict[str, Any]:
    """The whole bench (see the module doc); its figures. Raises AnvilMissing without a
    node, BenchFailed when the run did not do all its work."""
    binary = anvil_binary()
    with tempfile.TemporaryDirectory(prefix="mercato-custody-bench-") as directory:
        async with running_anvil(binary) as node:
            bench = CustodyBench(node, Path(directory), sizes)
            token = await deploy_token(node, bench.wallets)
            await bench.fund(token)
            service = await bench.start_service(token)
            try:
                return await _run(bench, service, token)
            finally:
                await service.stop()


async def _run(bench: CustodyBench, service: ExchangeService, token: str) -> dict[str, Any]:
    assert service.custody is not None and service.port is not None
    adapter = service.custody.adapters[CHAIN]
    assert isinstance(adapter, EvmAdapter)
    counter = RpcCounter(adapter)
    owners = await bench.make_addresses(service, await bench.make_users(service))
    planned = plan_deposits(bench.rng, sorted(owners), bench.sizes.deposits)
    first, last = await bench.send_deposits(token, planned)
    bench.figures["deposit_blocks"] = last - first + 1
    await bench.credit_deposits(service, adapter, counter)
    await bench.scan_with_more_addresses(adapter, counter, owners, first, last)
    decimals = {s: service.port.view.asset(s).decimals for s in ("ETH", "USDT")}  # type: ignore[union-attr]
    expected = bench.expected_credits(planned, owners, decimals)
    if bench.sizes.withdrawals:
        await bench.request_withdrawals(service, expected)
        await bench.send_withdrawals(service, adapter, counter)
    await bench.check_ledger(service, expected)
    return bench.figures
