"""The tables of the mail that passes through: inbound messages, suppressions, each copy sent (its slot in the
sending window), unsubscribe tokens, and the gateway credentials mail is submitted with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow, vocabulary
from models.enums import (
    Attribution,
    MessageKind,
    SlotState,
    SuppressionReason,
)


class InboundMessage(Base):
    """Every message the inbound server accepted, stored before it answered 250."""

    __tablename__ = "inbound_messages"
    __table_args__ = (Index("ix_inbound_messages_unprocessed", "processed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    peer: Mapped[str] = mapped_column(String(64), default="")
    mail_from: Mapped[str] = mapped_column(String(320), default="")
    rcpt_tos: Mapped[list[str]] = mapped_column(JSON, default=list)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int]
    message_id: Mapped[str | None] = mapped_column(String(998))
    # Message-ID + content hash: a redelivered duplicate is stored once.
    dedup_key: Mapped[str] = mapped_column(String(128), unique=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"), index=True)
    classification: Mapped[MessageKind | None] = mapped_column(vocabulary(MessageKind, "classification", 32))
    classified_by: Mapped[str | None] = mapped_column(String(64))
    processed_at: Mapped[datetime | None]
    forwarded_at: Mapped[datetime | None]
    # Reports (bounces, complaints, unsubscribe requests): how they were matched to mail the team sent.
    attribution: Mapped[Attribution | None] = mapped_column(vocabulary(Attribution, "attribution"))
    # Processing that failed: retried with backoff (next_attempt_at), parked after a few attempts (parked_at).
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None]
    parked_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))


class Suppression(Base):
    """Addresses a team's identities may not send to any more (unsubscribes, hard bounces, complaints).

    Scoped to the team (the Slack workspace): an opt-out binds the sender's company. `address_key` is the address in
    its normal form (services/gateway/suppressions.py: address_key), which lookups compare. Rows from before teams
    were recorded have no team_id and apply to every team."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("team_id", "address_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[str | None] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(320))  # as it was reported
    address_key: Mapped[str] = mapped_column(String(320), index=True)
    reason: Mapped[SuppressionReason] = mapped_column(vocabulary(SuppressionReason, "reason", 32))
    source_message_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SentRecipient(Base):
    """One recipient of one message sent as an identity through the gateway. It is both the sending slot the limits
    count (one per recipient: taken `reserved` at RCPT, `sent` once the upstream server accepted that recipient,
    deleted when it refused it or the relay failed) and what bounces, complaints and unsubscribe requests are matched
    against (a report acts only on mail the team really sent to that recipient).

    Rows carried over from the per-message log (migration 0007) have an empty recipient: they only count.

    `verp_token` is set when the platform relay sent it with the per-recipient return path
    bounces+<token>@<platform domain> (bot/mail/domains.py): a bounce arriving there names this row, whatever its
    body says. `message_id` is the Message-ID header, for reports that quote the original (company identities, whose
    bounces come back through the customer's mailbox and its CC tracking forwarder)."""

    __tablename__ = "sent_recipients"
    __table_args__ = (
        Index("ix_sent_recipients_identity_sent_at", "identity_id", "sent_at"),
        Index("ix_sent_recipients_team_recipient", "team_id", "recipient_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    team_id: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(320))
    recipient_key: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    verp_token: Mapped[str | None] = mapped_column(String(40), unique=True)
    state: Mapped[SlotState] = mapped_column(vocabulary(SlotState, "state"), default=SlotState.RESERVED)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when an attributed hard bounce or complaint came back for this copy (the identity's rates count them).
    bounced_at: Mapped[datetime | None]
    complained_at: Mapped[datetime | None]


class UnsubscribeToken(Base):
    """The token in the List-Unsubscribe links of mail a team sends to a recipient (one per team and recipient, in
    the normal form of services/gateway/suppressions.py). Whoever holds it may suppress that recipient for that team:
    it only ever travels in mail to that recipient."""

    __tablename__ = "unsubscribe_tokens"
    __table_args__ = (UniqueConstraint("team_id", "recipient_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(40), unique=True)
    team_id: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(320))  # as first addressed
    recipient_key: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GatewayCredential(Base):
    """SMTP AUTH credentials for the submission gateway, issued per identity. Only a keyed hash is stored
    ("hmac-sha256$<hex>"; credentials issued before 0007 hold "scrypt$..." until their next login)."""

    __tablename__ = "gateway_credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), default="cli")
    revoked_at: Mapped[datetime | None]
