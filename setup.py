"""Optional mypyc compilation of the engine's hot modules.

`pip install .` compiles the engine's modules (state, book, matching, accounts, the
command handlers, snapshot and invariants, the engine itself) with mypyc as one group,
so calls between them stay native (about twice the engine throughput); the pure-Python
modules stay the reference and the fallback. Editable installs (`pip install -e .`) never compile, so an edited source
file is never shadowed by a stale extension. MERCATO_COMPILE=0 forces pure Python,
MERCATO_COMPILE=1 makes a failed compilation an error instead of a fallback.
"""

import os
import sys

from setuptools import setup

COMPILED_MODULES = [
    f"src/mercato/core/{name}.py"
    for name in (
        "state",
        "book",
        "messages",
        "accounts",
        "matching",
        "handlers_trading",
        "handlers_funding",
        "handlers_admin",
        "snapshot",
        "invariants",
        "engine",
    )
]


def ext_modules() -> list:
    mode = os.environ.get("MERCATO_COMPILE", "auto")
    editable = any(arg in ("editable_wheel", "develop") for arg in sys.argv)
    if mode == "0" or (mode == "auto" and editable):
        return []
    try:
        from mypyc.build import mypycify

        return mypycify(COMPILED_MODULES, opt_level="3")
    except Exception as error:  # no mypyc or no compiler: stay pure Python
        if mode == "1":
            raise
        print(f"mercato: building pure Python, mypyc unavailable: {error}", file=sys.stderr)
        return []


setup(ext_modules=ext_modules())
