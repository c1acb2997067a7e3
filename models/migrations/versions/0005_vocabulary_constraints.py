"""every stored status and kind is CHECK-constrained to its vocabulary

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 11:30:00

The values are written out here (not imported from models.enums): a migration must keep meaning what it meant when
it landed, whatever the enums become later.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# table -> [(constraint name, column, allowed values, nullable)]
VOCABULARIES: dict[str, list[tuple[str, str, tuple[str, ...], bool]]] = {
    "identities": [
        ("kind", "kind", ("platform", "company"), False),
        ("status", "status", ("not_verified", "ready"), False),
        ("smtp_security", "smtp_security", ("starttls", "ssl", "none"), True),
    ],
    "limit_requests": [("status", "status", ("pending", "approved", "denied", "superseded"), False)],
    "verification_steps": [
        ("step", "step", ("sending", "receiving", "tracking"), False),
        ("status", "status", ("not_run", "pending", "verified", "failed"), False),
    ],
    "otp_challenges": [("closed_reason", "closed_reason", ("used", "locked", "expired", "replaced", "reset"), True)],
    "inbound_messages": [
        (
            "classification",
            "classification",
            ("verification", "bounce", "complaint", "auto_reply", "loop", "unsubscribe", "lead"),
            True,
        )
    ],
    "suppressions": [("reason", "reason", ("hard_bounce", "complaint", "unsubscribe"), False)],
    "sent_messages": [("state", "state", ("reserved", "sent"), False)],
}


def _condition(column: str, values: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({listed})"


def upgrade() -> None:
    for table, checks in VOCABULARIES.items():
        with op.batch_alter_table(table) as batch:
            for name, column, values, _nullable in checks:
                batch.create_check_constraint(name, _condition(column, values))


def downgrade() -> None:
    for table, checks in VOCABULARIES.items():
        with op.batch_alter_table(table) as batch:
            for name, _column, _values, _nullable in checks:
                batch.drop_constraint(f"ck_{table}_{name}", type_="check")
