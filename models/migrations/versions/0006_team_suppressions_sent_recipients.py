"""suppressions belong to a team and compare a normal form; every recipient of gateway mail is recorded

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 12:30:00

Existing suppressions get the team of the identity whose inbound message caused them; those whose team can't be
known keep team_id NULL, which keeps them in force for every team (an unsubscribe is never dropped by an upgrade).
The normal form is written out here (not imported): a migration keeps meaning what it meant when it landed.
"""

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_IGNORES_DOTS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def _address_key(address: str) -> str:
    local, _, domain = address.strip().strip("<>").lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    if domain in _IGNORES_DOTS:
        local, domain = local.replace(".", ""), _IGNORES_DOTS[domain]
    return f"{local}@{domain}" if domain else address.strip().lower()


def upgrade() -> None:
    op.create_table(
        "sent_recipients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("recipient_key", sa.String(length=320), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("verp_token", sa.String(length=40), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("sent_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('reserved', 'sent')", name=op.f("ck_sent_recipients_state")),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_sent_recipients_identity_id_identities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sent_recipients")),
        sa.UniqueConstraint("verp_token", name=op.f("uq_sent_recipients_verp_token")),
    )
    with op.batch_alter_table("sent_recipients") as batch:
        batch.create_index("ix_sent_recipients_identity_sent_at", ["identity_id", "sent_at"])
        batch.create_index("ix_sent_recipients_team_recipient", ["team_id", "recipient_key"])
        batch.create_index(batch.f("ix_sent_recipients_message_id"), ["message_id"])

    with op.batch_alter_table("suppressions") as batch:
        batch.add_column(sa.Column("team_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("address_key", sa.String(length=320), nullable=True))
    connection = op.get_bind()
    connection.execute(
        sa.text(
            "UPDATE suppressions SET team_id = (SELECT identities.team_id FROM inbound_messages "
            "JOIN identities ON identities.id = inbound_messages.identity_id "
            "WHERE inbound_messages.id = suppressions.source_message_id)"
        )
    )
    for row_id, address in connection.execute(sa.text("SELECT id, address FROM suppressions")).all():
        connection.execute(
            sa.text("UPDATE suppressions SET address_key = :key WHERE id = :id"),
            {"key": _address_key(address), "id": row_id},
        )
    with op.batch_alter_table("suppressions") as batch:
        batch.alter_column("address_key", existing_type=sa.String(length=320), nullable=False)
        batch.drop_constraint("uq_suppressions_address", type_="unique")
        batch.create_unique_constraint(batch.f("uq_suppressions_team_id"), ["team_id", "address_key"])
        batch.create_index(batch.f("ix_suppressions_address_key"), ["address_key"])


def downgrade() -> None:
    with op.batch_alter_table("suppressions") as batch:
        batch.drop_index(batch.f("ix_suppressions_address_key"))
        batch.drop_constraint(batch.f("uq_suppressions_team_id"), type_="unique")
        batch.create_unique_constraint("uq_suppressions_address", ["address"])
        batch.drop_column("address_key")
        batch.drop_column("team_id")
    op.drop_table("sent_recipients")
