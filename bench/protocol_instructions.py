"""Instructions per HTTP request through the server's protocol layer, counted by callgrind.

What the HTTP limits cost per request (docs/configuration.md, "HTTP limits"), as a figure
that does not move with the load of a shared VM: keep-alive ``POST`` requests with a
small JSON body are fed to one connection's protocol object, in process, answered by a
plain ASGI app (the app of ``bench/http_floor.py``), and callgrind counts the
instructions of the loop. Two stacks:

- ``stock``: uvicorn's ``HttpToolsProtocol`` and its proxy-headers middleware, as
  ``mercato serve`` ran before the limits;
- ``guarded``: ``mercato.api.server_protocol`` and ``mercato.api.client_address``, as it
  runs now (the default ``[http]`` configuration).

    python bench/protocol_instructions.py [--requests 20000]

Each stack is counted for a peer that is not a trusted proxy (203.0.113.7) and for one
that is (127.0.0.1, as in ``mercato bench api``; no X-Forwarded-For sent). Needs valgrind
(``apt-get install valgrind``). Prints one JSON object of instructions per request.
"""

from __future__ import annotations

import argparse
import json

from callgrind import count_instructions

CHILD = r"""
import asyncio, os, subprocess, sys
from uvicorn.config import Config
from uvicorn.server import ServerState

BODY = b'{"ok":1}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"8")]
REQUEST = (b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\n"
           b"Content-Type: application/json\r\nContent-Length: 7\r\n\r\n" + b'{"a":1}')

async def app(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})

if sys.argv[1] == "guarded":
    from mercato.api.client_address import ClientAddress, TrustedProxies
    from mercato.api.server_protocol import protocols_for
    from mercato.config import HttpConfig
    limits = HttpConfig()
    http, ws = protocols_for(limits)
    config = Config(ClientAddress(app, TrustedProxies(limits.trusted_proxies)), http=http,
                    ws=ws, proxy_headers=False, lifespan="off", access_log=False)
else:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    config = Config(app, http=HttpToolsProtocol, lifespan="off", access_log=False)
config.load()

class Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.written = 0
    def get_extra_info(self, name, default=None):
        return {"peername": (sys.argv[3], 40000),
                "sockname": ("127.0.0.1", 8000)}.get(name, default)
    def write(self, data):
        self.written += len(data)
    def is_closing(self):
        return False
    def pause_reading(self): pass
    def resume_reading(self): pass

async def main(count):
    loop = asyncio.get_running_loop()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(),
                                          app_state={}, _loop=loop)
    transport = Transport()
    protocol.connection_made(transport)
    async def serve(n):
        for _ in range(n):
            protocol.data_received(REQUEST)
            await asyncio.sleep(0)  # the request's ASGI task runs to its end
    await serve(1000)  # warm up
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True, check=True)
    await serve(count)
    subprocess.run(["callgrind_control", "-i", "off", pid], capture_output=True, check=True)
    assert transport.written > count * 50, "the requests were not answered"

asyncio.run(main(int(sys.argv[2])))
"""


def instructions(stack: str, requests: int, peer: str) -> int:
    total, _ = count_instructions(CHILD, stack, str(requests), peer)
    return round(total / requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    figures = {f"{stack}_{kind}_peer": instructions(stack, args.requests, peer)
               for kind, peer in (("untrusted", "203.0.113.7"), ("trusted", "127.0.0.1"))
               for stack in ("stock", "guarded")}  # fmt: skip
    print(json.dumps({"requests": args.requests, **figures}))


if __name__ == "__main__":
    main()
