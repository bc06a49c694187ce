"""Chain adapters: one per chain family, all behind ``base.ChainAdapter``."""
