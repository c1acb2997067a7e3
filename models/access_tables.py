"""The tables of the ways in: mailbox sign-ins (Microsoft/Google) and their pending states, the fingerprint of the
encryption key, and the Slack requests already seen."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow, vocabulary
from models.enums import (
    MailboxProvider,
)


class MailboxGrant(Base):
    """A mailbox owner's consent from "Sign in with Microsoft / Google": the tokens a company identity sends with
    (SMTP XOAUTH2) instead of a password. Both tokens are Fernet-encrypted like passwords.

    Made from an open identity modal (`signed_in_by`, `view_id`) and attached to the identity when the form is saved
    (`identity_id`; one grant per identity). `refreshing_until` is the lease of the one process renewing the access
    token (a conditional update takes it); `revoked_at` is set when the provider said the grant is gone."""

    __tablename__ = "mailbox_grants"
    __table_args__ = (Index("ix_mailbox_grants_signed_in_by_view_id", "signed_in_by", "view_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), unique=True)
    signed_in_by: Mapped[str] = mapped_column(String(32))
    view_id: Mapped[str | None] = mapped_column(String(64))
    provider: Mapped[MailboxProvider] = mapped_column(vocabulary(MailboxProvider, "provider"))
    mailbox: Mapped[str] = mapped_column(String(254))
    refresh_token_encrypted: Mapped[str] = mapped_column(Text)
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    access_expires_at: Mapped[datetime | None]
    refreshing_until: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OAuthSignIn(Base):
    """A sign-in started from an open identity modal, one per Slack user and modal: the state's nonce (single use,
    `state_expires_at`), the PKCE verifier (encrypted; it never leaves the bot), and the form as it was when the
    button was clicked, so the modal can be updated in place when the browser comes back."""

    __tablename__ = "oauth_sign_ins"
    __table_args__ = (UniqueConstraint("slack_user_id", "view_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    slack_user_id: Mapped[str] = mapped_column(String(32))
    view_id: Mapped[str] = mapped_column(String(64))
    provider: Mapped[MailboxProvider | None] = mapped_column(vocabulary(MailboxProvider, "provider"))
    state_nonce: Mapped[str | None] = mapped_column(String(64), unique=True)
    code_verifier_encrypted: Mapped[str | None] = mapped_column(Text)
    state_expires_at: Mapped[datetime | None]
    form: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class KeyFingerprint(Base):
    """Which encryption key this database's secrets are under: a keyed fingerprint of the first of SECRET_KEYS,
    never the key. One row; every process compares its keys with it at start, `secrets rotate` moves it."""

    __tablename__ = "key_fingerprint"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    fingerprint: Mapped[str] = mapped_column(String(80))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class SeenRequest(Base):
    """Signatures of Slack requests already handled, kept while Slack's timestamp check would still accept them:
    the same signed request a second time (a replay) is acknowledged and ignored, in whichever process it lands."""

    __tablename__ = "seen_requests"

    signature: Mapped[str] = mapped_column(String(100), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
