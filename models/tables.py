"""The tables. Constraints live in the schema, not only in Python."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow

DEFAULT_HOURLY_LIMIT = 40
DEFAULT_DAILY_LIMIT = 200
MAX_DAILY_LIMIT = 250


class IdentityKind(enum.StrEnum):
    PLATFORM = "platform"
    COMPANY = "company"


class IdentityStatus(enum.StrEnum):
    NOT_VERIFIED = "not_verified"
    READY = "ready"


class LimitRequestStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    SUPERSEDED = "superseded"


class Identity(Base):
    """A sender identity: the name and address mail goes out as, with its limits and where responses go."""

    __tablename__ = "identities"
    __table_args__ = (
        CheckConstraint("hourly_limit >= 1", name="hourly_positive"),
        CheckConstraint(f"daily_limit >= 1 AND daily_limit <= {MAX_DAILY_LIMIT}", name="daily_range"),
        CheckConstraint("hourly_limit <= daily_limit", name="hourly_within_daily"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str] = mapped_column(String(100))
    company_name: Mapped[str] = mapped_column(String(100))
    address: Mapped[str] = mapped_column(String(254), unique=True)
    hourly_limit: Mapped[int] = mapped_column(default=DEFAULT_HOURLY_LIMIT)
    daily_limit: Mapped[int] = mapped_column(default=DEFAULT_DAILY_LIMIT)
    forwarding_address: Mapped[str] = mapped_column(String(254))
    notices_channel: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=IdentityStatus.NOT_VERIFIED.value)
    # The Slack view that created it: a repeated submission of the same view creates nothing new.
    created_from_view: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditEvent(Base):
    """Append-only trail: who did what to which identity, and when. Never updated or deleted."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int | None] = mapped_column(
        ForeignKey("identities.id", ondelete="SET NULL"), index=True
    )
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LimitRequest(Base):
    """A request to raise an identity's limits above the defaults; a manager decides it exactly once."""

    __tablename__ = "limit_requests"
    __table_args__ = (
        CheckConstraint("requested_hourly >= 1", name="hourly_positive"),
        CheckConstraint(f"requested_daily >= 1 AND requested_daily <= {MAX_DAILY_LIMIT}", name="daily_range"),
        CheckConstraint("requested_hourly <= requested_daily", name="hourly_within_daily"),
        Index("ix_limit_requests_identity_status", "identity_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    requested_by: Mapped[str] = mapped_column(String(32))
    previous_hourly: Mapped[int]
    previous_daily: Mapped[int]
    requested_hourly: Mapped[int]
    requested_daily: Mapped[int]
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=LimitRequestStatus.PENDING.value)
    decided_by: Mapped[str | None] = mapped_column(String(32))
    decided_at: Mapped[datetime | None]
    # Where the request was posted ([{"channel": ..., "ts": ...}]) so the decision can update it in place.
    messages: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
