"""In-memory read models: what request handlers read without asking the database.

Each follows the engine's applied batches (a sequencer listener, in the engine's process)
and is seeded at start from the SQL projection, which has caught up with the journal by
then. Unlike :mod:`mercato.store` (SQL only), nothing here writes to the database.
"""
