"""identities can be disabled and deleted (address held, then released); time-boxed limit increases with the
evidence they were asked with; limit notices; who has the App Home open

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28 10:00:00

Every existing identity is active. The vocabulary is written out here, not imported.
"""

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("lifecycle", sa.String(length=16), nullable=False, server_default="active"))
        batch.add_column(sa.Column("disabled_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("deleted_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("released_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("former_address", sa.String(length=254), nullable=True))
        batch.create_check_constraint("lifecycle", "lifecycle IN ('active', 'disabled', 'deleted')")
        batch.create_index("ix_identities_deleted_at", ["deleted_at"], unique=False)
    with op.batch_alter_table("limit_requests") as batch:
        batch.add_column(sa.Column("until", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revert_hourly", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("revert_daily", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("ended_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("ended_by", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))
        batch.create_index("ix_limit_requests_until", ["until"], unique=False)
    op.create_table(
        "limit_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("opened_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("limit_name", sa.String(length=16), nullable=False),
        sa.Column("limit_value", sa.Integer(), nullable=False),
        sa.Column("deferred", sa.Integer(), nullable=False),
        sa.Column("next_slot_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("ts", sa.String(length=32), nullable=True),
        sa.Column("shown", sa.Integer(), nullable=False),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_limit_notices_identity_id_identities"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limit_notices")),
    )
    op.create_index("ix_limit_notices_identity_opened", "limit_notices", ["identity_id", "opened_at"], unique=False)
    op.create_table(
        "home_viewers",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("opened_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_home_viewers")),
    )
    op.create_index("ix_home_viewers_team_id", "home_viewers", ["team_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_home_viewers_team_id", table_name="home_viewers")
    op.drop_table("home_viewers")
    op.drop_index("ix_limit_notices_identity_opened", table_name="limit_notices")
    op.drop_table("limit_notices")
    with op.batch_alter_table("limit_requests") as batch:
        batch.drop_index("ix_limit_requests_until")
        for column in ("evidence", "ended_by", "ended_at", "revert_daily", "revert_hourly", "until"):
            batch.drop_column(column)
    with op.batch_alter_table("identities") as batch:
        batch.drop_index("ix_identities_deleted_at")
        batch.drop_constraint("ck_identities_lifecycle", type_="check")
        for column in ("former_address", "released_at", "deleted_at", "disabled_at", "lifecycle"):
            batch.drop_column(column)
