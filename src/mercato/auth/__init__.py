"""Users, passwords and (next) sessions, 2FA, API keys and rate limits."""
