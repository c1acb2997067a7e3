"""inbound messages: attribution of reports, retries with backoff and parking; two new kinds of message

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 14:00:00

The vocabularies are written out here (not imported from models.enums): a migration keeps meaning what it meant when
it landed. Existing rows keep their classification; they get attempts = 0 and no attribution.
"""

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

KINDS_BEFORE = ("verification", "bounce", "complaint", "auto_reply", "loop", "unsubscribe", "lead")
KINDS_AFTER = KINDS_BEFORE + ("list_manager", "operator")
ATTRIBUTIONS = ("verp", "message_id", "mailed", "unmatched")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.add_column(sa.Column("attribution", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_attempt_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("parked_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_error", sa.String(length=500), nullable=True))
        batch.drop_constraint(op.f("ck_inbound_messages_classification"), type_="check")
        batch.create_check_constraint("classification", _in("classification", KINDS_AFTER))
        batch.create_check_constraint("attribution", _in("attribution", ATTRIBUTIONS))


def downgrade() -> None:
    op.execute("UPDATE inbound_messages SET classification = 'auto_reply' WHERE classification = 'list_manager'")
    op.execute("UPDATE inbound_messages SET classification = 'lead' WHERE classification = 'operator'")
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_constraint(op.f("ck_inbound_messages_attribution"), type_="check")
        batch.drop_constraint(op.f("ck_inbound_messages_classification"), type_="check")
        batch.create_check_constraint("classification", _in("classification", KINDS_BEFORE))
        batch.drop_column("last_error")
        batch.drop_column("parked_at")
        batch.drop_column("next_attempt_at")
        batch.drop_column("attempts")
        batch.drop_column("attribution")
