"""Chain units <-> ledger atoms: the one place where they are converted.

ETH has 18 decimals on chain and 8 in the ledger: a deposit is credited rounded down to
whole ledger atoms and the remainder is kept as known dust (reported by reconciliation,
never lost silently). USDT has 6 on chain and 8 in the ledger: every chain unit is a
whole number of atoms, and a withdrawal must be a whole number of chain units. Either
way a withdrawal is exact on chain.
"""

from __future__ import annotations

from mercato.core.errors import CodedError, ErrorKind


def _pow10(exponent: int) -> int:
    return int(10**exponent)  # int ** int is typed Any (a negative exponent gives a float)


def split_deposit(amount_chain: int, chain_decimals: int, ledger_decimals: int) -> tuple[int, int]:
    """(ledger atoms credited, dust left in chain units) for a deposit of ``amount_chain``."""
    if chain_decimals >= ledger_decimals:
        scale = _pow10(chain_decimals - ledger_decimals)
        return amount_chain // scale, amount_chain % scale
    return amount_chain * _pow10(ledger_decimals - chain_decimals), 0


def atoms_to_chain(atoms: int, chain_decimals: int, ledger_decimals: int) -> int:
    """The exact chain amount of ``atoms``; refuses atoms finer than the chain's unit."""
    if chain_decimals >= ledger_decimals:
        return atoms * _pow10(chain_decimals - ledger_decimals)
    scale = _pow10(ledger_decimals - chain_decimals)
    if atoms % scale:
        step = f"0.{'0' * (chain_decimals - 1)}1" if chain_decimals else "1"
        raise CodedError(
            "INVALID_AMOUNT",
            f"the chain carries {chain_decimals} decimals: the amount must be a multiple of {step}",
            ErrorKind.INVALID,
        )
    return atoms // scale


def fine_unit_scale(chain_decimals: int, ledger_decimals: int) -> tuple[int, int]:
    """Factors (for chain units, for ledger atoms) into the finer of the two units, in
    which reconciliation adds chain holdings and ledger balances exactly."""
    fine = max(chain_decimals, ledger_decimals)
    return _pow10(fine - chain_decimals), _pow10(fine - ledger_decimals)
