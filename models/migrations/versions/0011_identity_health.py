"""identities carry their health; sent recipients remember attributed hard bounces and complaints

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 13:00:00

Every existing identity starts healthy. The vocabulary is written out here, not imported.
"""

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("health", sa.String(length=16), nullable=False, server_default="healthy"))
        batch.add_column(sa.Column("health_reason", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("health_changed_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.create_check_constraint("health", "health IN ('healthy', 'needs_attention', 'paused')")
    with op.batch_alter_table("sent_recipients") as batch:
        batch.add_column(sa.Column("bounced_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("complained_at", models.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sent_recipients") as batch:
        batch.drop_column("complained_at")
        batch.drop_column("bounced_at")
    with op.batch_alter_table("identities") as batch:
        batch.drop_constraint(op.f("ck_identities_health"), type_="check")
        batch.drop_column("health_changed_at")
        batch.drop_column("health_reason")
        batch.drop_column("health")
