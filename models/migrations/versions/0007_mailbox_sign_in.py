"""Sign in with Microsoft / Google: a company identity's OAuth grant (encrypted tokens) and sign-ins in progress

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 10:40:00

Two new tables; nothing existing changes. The provider values are written out here (not imported from
models.enums): a migration keeps meaning what it meant when it landed.
"""

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _provider(nullable: bool) -> sa.Column:
    kind = sa.Enum("microsoft", "google", name="provider", native_enum=False, create_constraint=True, length=16)
    return sa.Column("provider", kind, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "oauth_sign_ins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slack_user_id", sa.String(length=32), nullable=False),
        sa.Column("view_id", sa.String(length=64), nullable=False),
        _provider(nullable=True),
        sa.Column("state_nonce", sa.String(length=64), nullable=True),
        sa.Column("code_verifier_encrypted", sa.Text(), nullable=True),
        sa.Column("state_expires_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("form", sa.Text(), nullable=True),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_sign_ins")),
        sa.UniqueConstraint("slack_user_id", "view_id", name=op.f("uq_oauth_sign_ins_slack_user_id")),
        sa.UniqueConstraint("state_nonce", name=op.f("uq_oauth_sign_ins_state_nonce")),
    )
    op.create_table(
        "mailbox_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=True),
        sa.Column("signed_in_by", sa.String(length=32), nullable=False),
        sa.Column("view_id", sa.String(length=64), nullable=True),
        _provider(nullable=False),
        sa.Column("mailbox", sa.String(length=254), nullable=False),
        sa.Column("refresh_token_encrypted", sa.Text(), nullable=False),
        sa.Column("access_token_encrypted", sa.Text(), nullable=True),
        sa.Column("access_expires_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refreshing_until", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name=op.f("fk_mailbox_grants_identity_id_identities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailbox_grants")),
        sa.UniqueConstraint("identity_id", name=op.f("uq_mailbox_grants_identity_id")),
    )
    op.create_index("ix_mailbox_grants_signed_in_by_view_id", "mailbox_grants", ["signed_in_by", "view_id"])


def downgrade() -> None:
    op.drop_index("ix_mailbox_grants_signed_in_by_view_id", table_name="mailbox_grants")
    op.drop_table("mailbox_grants")
    op.drop_table("oauth_sign_ins")
