"""health checks: one row per run of an identity's checks; when the next is due and what the last one found

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 16:00:00

Existing identities get no due time: the scheduler gives each ready identity its first check one interval after it
first sees it. The vocabulary is written out here, not imported.
"""

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

OUTCOMES = "'passed', 'warnings', 'problems', 'incomplete'"


def upgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("health_checked_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("health_check_outcome", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("health_due_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("health_rates_since", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.create_check_constraint("health_check_outcome", f"health_check_outcome IN ({OUTCOMES})")
        batch.create_index("ix_identities_health_due_at", ["health_due_at"])
    op.create_table(
        "health_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("started_by", sa.String(length=32), nullable=False),
        sa.Column("started_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("probe_token", sa.String(length=64), nullable=True),
        sa.Column("probe_deadline", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"outcome IN ({OUTCOMES})", name=op.f("ck_health_checks_outcome")),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_health_checks_identity_id_identities"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_checks")),
        sa.UniqueConstraint("probe_token", name=op.f("uq_health_checks_probe_token")),
    )
    op.create_index(op.f("ix_health_checks_identity_id"), "health_checks", ["identity_id"])
    op.create_index(op.f("ix_health_checks_probe_deadline"), "health_checks", ["probe_deadline"])
    # At most one open run per identity (a second start, in any process, fails on this index).
    op.create_index(
        "uq_health_checks_open",
        "health_checks",
        ["identity_id"],
        unique=True,
        sqlite_where=sa.text("finished_at IS NULL"),
        postgresql_where=sa.text("finished_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_health_checks_open", table_name="health_checks")
    op.drop_index(op.f("ix_health_checks_probe_deadline"), table_name="health_checks")
    op.drop_index(op.f("ix_health_checks_identity_id"), table_name="health_checks")
    op.drop_table("health_checks")
    with op.batch_alter_table("identities") as batch:
        batch.drop_index("ix_identities_health_due_at")
        batch.drop_constraint(op.f("ck_identities_health_check_outcome"), type_="check")
        batch.drop_column("health_rates_since")
        batch.drop_column("health_due_at")
        batch.drop_column("health_check_outcome")
        batch.drop_column("health_checked_at")
