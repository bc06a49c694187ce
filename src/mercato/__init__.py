"""Mercato: a centralized crypto exchange backend."""
