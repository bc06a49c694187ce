"""`/docs` and `/redoc` work without Internet: every script, style and icon they load is
served by `mercato serve` itself (docs/configuration.md, "API documentation pages")."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from service.conftest import Server
from services import require_service

REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


@pytest.fixture
def server(tmp_path: Path, env: dict[str, str], servers: list[Server]) -> Server:
    started = Server(tmp_path / "data", env)
    servers.append(started)
    started.wait_ready()
    return started


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_documentation_pages_load_nothing_from_another_host(server: Server, page: str) -> None:
    html = httpx.get(f"{server.url}{page}")
    assert html.status_code == 200
    assert not re.search(r"https?://|//[a-z]", html.text), "the page names another host"
    references = REFERENCE.findall(html.text)
    assert len(references) >= 2  # the script (and style or icon)
    for reference in references:
        url = urljoin(f"{server.url}{page}", reference)
        assert urlsplit(url).netloc == f"127.0.0.1:{server.port}", reference
        asset = httpx.get(url)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 1000, reference  # a real file, not an error body
    schema = httpx.get(f"{server.url}/openapi.json")
    assert schema.status_code == 200 and "/api/v1/orders" in schema.json()["paths"]


def test_swagger_ui_renders_the_operations_with_no_network(server: Server) -> None:
    """Headless Chromium that can resolve no host but this one renders the operations."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    require_service("chromium", browser is not None, "not installed (apt-get install chromium)")
    assert browser is not None
    rendered = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--virtual-time-budget=20000", "--dump-dom", f"{server.url}/docs"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    dom = rendered.stdout
    assert 'class="opblock-summary-path"' in dom, dom[-2000:]
    assert "/api/v1/orders" in dom and "/api/v1/auth/login" in dom
