"""A real Anvil node for the EVM custody tests, and the few things tests do to it.

The binary is ``MERCATO_ANVIL`` if set, else ``node_modules/.bin/anvil`` of the repository
(``npm ci`` installs it from package-lock.json), else ``anvil`` on PATH. Without one the
tests skip, or fail when ``MERCATO_REQUIRE_SERVICES=1`` (tests/services.py).

Test set-up (deploying the token, minting, plain transfers) goes through Anvil's unlocked
dev accounts with the synchronous web3 client; the adapter under test never does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from services import require_service

REPO_ROOT = Path(__file__).resolve().parents[2]
# Anvil's default dev mnemonic: its accounts are funded with 10000 ETH each.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNTS = 10
STARTUP_SECONDS = 20.0

Account.enable_unaudited_hdwallet_features()
DEV_KEYS: tuple[str, ...] = tuple(
    "0x" + Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex()
    for i in range(DEV_ACCOUNTS)
)
DEV_ADDRESSES: tuple[str, ...] = tuple(Account.from_key(key).address for key in DEV_KEYS)


def token_artifact() -> dict[str, Any]:
    """MercatoToken's ABI and bytecode, as the package ships them."""
    text = (files("mercato.custody") / "contracts" / "MercatoToken.json").read_text()
    return dict(json.loads(text))


def anvil_binary() -> str | None:
    configured = os.environ.get("MERCATO_ANVIL")
    if configured:
        return configured
    local = REPO_ROOT / "node_modules" / ".bin" / "anvil"
    if local.exists():
        return str(local)
    return shutil.which("anvil")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return bool(json.loads(response.read()).get("result"))
    except (OSError, urllib.error.URLError, ValueError):
        return False


@dataclass
class Anvil:
    """A running node: its URL, its process, and the controls tests use."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def web3(self) -> Web3:
        return Web3(Web3.HTTPProvider(self.url))

    def rpc(self, method: str, *params: Any) -> Any:
        response = self.web3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        return response.get("result")

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", hex(blocks))

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", enabled)

    def head(self) -> int:
        return int(self.web3.eth.block_number)

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot: str) -> None:
        if self.rpc("evm_revert", snapshot) is not True:
            raise RuntimeError(f"evm_revert {snapshot} refused")

    def send_eth(self, sender: str, to: str, value: int) -> str:
        """An unlocked dev account's plain transfer; its hash (mined now if automine)."""
        txhash = self.web3.eth.send_transaction({"from": sender, "to": to, "value": value})
        return "0x" + bytes(txhash).hex()

    def deploy_token(self, symbol: str, decimals: int = 6, deployer: int = 0) -> str:
        """A MercatoToken deployed (and mined) from dev account ``deployer``."""
        artifact = token_artifact()
        contract = self.web3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        txhash = contract.constructor(f"Mercato {symbol}", symbol, decimals).transact(
            {"from": DEV_ADDRESSES[deployer]}
        )
        self.mine_if_manual()
        receipt = self.web3.eth.wait_for_transaction_receipt(txhash, timeout=10)
        return str(receipt["contractAddress"])

    def token(self, address: str) -> Any:
        return self.web3.eth.contract(address=address, abi=token_artifact()["abi"])

    def mint(self, token: str, to: str, amount: int, deployer: int = 0) -> str:
        txhash = (
            self.token(token).functions.mint(to, amount).transact({"from": DEV_ADDRESSES[deployer]})
        )
        return "0x" + bytes(txhash).hex()

    def transfer_token(self, token: str, sender: str, to: str, amount: int) -> str:
        txhash = self.token(token).functions.transfer(to, amount).transact({"from": sender})
        return "0x" + bytes(txhash).hex()

    def token_balance(self, token: str, owner: str) -> int:
        return int(self.token(token).functions.balanceOf(owner).call())

    def mine_if_manual(self) -> None:
        if not self.rpc("anvil_getAutomine"):
            self.mine()

    def stop(self) -> None:
        """Kill the node. npm's ``anvil`` is a node script that runs the real binary as
        a child and does not pass SIGKILL on: the whole process group goes."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@contextlib.contextmanager
def running_anvil(*extra_args: str) -> Iterator[Anvil]:
    """A fresh Anvil on a free port (chain id 31337, the dev accounts funded), killed on
    exit. Skips, or fails under MERCATO_REQUIRE_SERVICES=1, without a binary."""
    binary = anvil_binary()
    require_service(
        "anvil", binary is not None, "no MERCATO_ANVIL, node_modules/.bin/anvil or anvil on PATH"
    )
    assert binary is not None
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            *(binary, "--host", "127.0.0.1", "--port", str(port), "--silent"),
            *("--mnemonic", DEV_MNEMONIC, "--accounts", str(DEV_ACCOUNTS), *extra_args),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, for stop()
    )
    node = Anvil(url, process)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _answers(url):
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                require_service("anvil", False, f"exited with {process.returncode}: {error}")
            if time.monotonic() > deadline:
                require_service("anvil", False, f"no answer on {url} after {STARTUP_SECONDS}s")
            time.sleep(0.05)
        yield node
    finally:
        node.stop()
        if process.stderr:
            process.stderr.close()
