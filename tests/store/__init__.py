"""SQL store tests. A package, so that pytest imports these modules as ``store.*`` with
``tests/`` on ``sys.path`` (its default "prepend" import mode): that is how the conftest
imports ``services``, and its ``conftest`` does not shadow ``tests/core/conftest.py``."""
