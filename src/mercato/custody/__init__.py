"""Custody on real chains: keys and deposit addresses, chain adapters (EVM, Solana),
the deposit watcher, the withdrawal and sweep senders, reconciliation (docs/custody.md).

Layout: ``chains/`` holds one adapter per chain family behind :class:`ChainAdapter`
(``chains/base.py``); ``signer.py`` is the only code that touches private keys; the
workers (``watcher.py``, ``sender.py``, ``sweeper.py``) read and write the custody tables
of the SQL store and reach the engine only through the port. The business rules a user
meets (limits, address book, approvals) live in ``mercato.application.custody``.
"""
