"""The tables of identities and what people do with them (health, audit, limits, the App Home, verification).
Constraints live in the schema, not only in Python. The mail that passes through is in mail_tables.py, the ways in
(sign-ins, keys, seen requests) in access_tables.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow, vocabulary
from models.enums import (
    CheckOutcome,
    IdentityHealth,
    IdentityKind,
    IdentityLifecycle,
    IdentityStatus,
    LimitRequestStatus,
    OtpCloseReason,
    SmtpSecurity,
    StepName,
    StepStatus,
)

DEFAULT_HOURLY_LIMIT = 40
DEFAULT_DAILY_LIMIT = 200
MAX_DAILY_LIMIT = 250


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
    kind: Mapped[IdentityKind] = mapped_column(vocabulary(IdentityKind, "kind"))
    display_name: Mapped[str] = mapped_column(String(100))
    company_name: Mapped[str] = mapped_column(String(100))
    address: Mapped[str] = mapped_column(String(254), unique=True)
    hourly_limit: Mapped[int] = mapped_column(default=DEFAULT_HOURLY_LIMIT)
    daily_limit: Mapped[int] = mapped_column(default=DEFAULT_DAILY_LIMIT)
    forwarding_address: Mapped[str] = mapped_column(String(254))
    notices_channel: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(String(32))
    status: Mapped[IdentityStatus] = mapped_column(
        vocabulary(IdentityStatus, "status"), default=IdentityStatus.NOT_VERIFIED
    )
    # The Slack view that created it: a repeated submission of the same view creates nothing new.
    created_from_view: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    # Company-domain identities: how mail leaves through the customer's own server.
    esp_provider: Mapped[str | None] = mapped_column(String(32))
    smtp_host: Mapped[str | None] = mapped_column(String(253))
    smtp_port: Mapped[int | None]
    smtp_security: Mapped[SmtpSecurity | None] = mapped_column(vocabulary(SmtpSecurity, "smtp_security"))
    smtp_username: Mapped[str | None] = mapped_column(String(254))
    smtp_password_encrypted: Mapped[str | None] = mapped_column(Text)  # Fernet token, never the password
    # Where the customer's mailbox forwards copies of replies (unique, unguessable).
    tracking_address: Mapped[str | None] = mapped_column(String(254), unique=True)

    # Health after verification (services/health): what the last checks or the bounce and complaint rates found.
    health: Mapped[IdentityHealth] = mapped_column(vocabulary(IdentityHealth, "health"), default=IdentityHealth.HEALTHY)
    health_reason: Mapped[str] = mapped_column(Text, default="")
    health_changed_at: Mapped[datetime | None]
    # The last finished run of the health checks (services/health): when, and what it found.
    health_checked_at: Mapped[datetime | None]
    health_check_outcome: Mapped[CheckOutcome | None] = mapped_column(vocabulary(CheckOutcome, "health_check_outcome"))
    # When the scheduled checks are next due: claimed by a conditional update, so one process runs them per interval.
    health_due_at: Mapped[datetime | None] = mapped_column(index=True)
    # After a manager resumed a paused identity, its bounce and complaint rates count mail sent from then on only.
    health_rates_since: Mapped[datetime | None]

    # The verification panel message in the notices channel, updated in place.
    panel_channel: Mapped[str | None] = mapped_column(String(32))
    panel_ts: Mapped[str | None] = mapped_column(String(32))

    # In use, disabled or deleted (services/identities/lifecycle.py). A deleted identity keeps its row (audit trail,
    # attribution of late reports) and holds its address for a while; when the hold ends the address is released:
    # moved to `former_address`, `address` becoming "released:<id>" (never an address), so it can be used again.
    lifecycle: Mapped[IdentityLifecycle] = mapped_column(
        vocabulary(IdentityLifecycle, "lifecycle"), default=IdentityLifecycle.ACTIVE
    )
    disabled_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None] = mapped_column(index=True)
    released_at: Mapped[datetime | None]
    former_address: Mapped[str | None] = mapped_column(String(254))


class HealthCheck(Base):
    """One run of an identity's health checks: the SMTP login, the tracking probe, DNS (services/health).

    At most one run per identity is open (finished_at NULL) at a time: the partial unique index makes a second start
    fail, in whichever process. A run finishes once (a conditional update on finished_at): with the login and DNS
    results when there is no probe, else when the probe's copy arrives (probe_token) or its deadline passes."""

    __tablename__ = "health_checks"
    __table_args__ = (
        Index(
            "uq_health_checks_open",
            "identity_id",
            unique=True,
            sqlite_where=text("finished_at IS NULL"),
            postgresql_where=text("finished_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    started_by: Mapped[str] = mapped_column(String(32))  # "schedule", or the Slack user who clicked Re-run checks
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # What each check found: [{"check", "status", "subject", "code", "message", "fix", "record", "carried"}, ...]
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    outcome: Mapped[CheckOutcome | None] = mapped_column(vocabulary(CheckOutcome, "outcome"))
    # The tracking probe: the token its response email carries, and when to stop waiting for the copy.
    probe_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    probe_deadline: Mapped[datetime | None] = mapped_column(index=True)


class AuditEvent(Base):
    """Append-only trail: who did what to which identity, and when. Never updated or deleted."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"), index=True)
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
    status: Mapped[LimitRequestStatus] = mapped_column(
        vocabulary(LimitRequestStatus, "status"), default=LimitRequestStatus.PENDING
    )
    decided_by: Mapped[str | None] = mapped_column(String(32))
    decided_at: Mapped[datetime | None]
    # Where the request was posted ([{"channel": ..., "ts": ...}]) so the decision can update it in place.
    messages: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # Set when a process takes on posting the request to the approvers (claimed once; cleared if it failed).
    posted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A time-boxed increase: in force until `until`, then the limits go back to `revert_hourly`/`revert_daily` (what
    # the identity had when it was approved). `ended_at` is set exactly once (a conditional update), when it ended:
    # at `until`, early by a manager (`ended_by`), or replaced by a later change ("replaced").
    until: Mapped[datetime | None] = mapped_column(index=True)
    revert_hourly: Mapped[int | None]
    revert_daily: Mapped[int | None]
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(32))
    # What a manager needs to decide, as it was when asked (services/limits/evidence.py): use of the current limits
    # over the last 7 days, bounce and complaint rates, health.
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LimitNotice(Base):
    """The gateway deferred recipients of an identity for its limit: one notice per identity per hour at most (the
    row is the claim, taken under the identity's row lock), posted once to its channel and updated as more are
    deferred."""

    __tablename__ = "limit_notices"
    __table_args__ = (Index("ix_limit_notices_identity_opened", "identity_id", "opened_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    limit_name: Mapped[str] = mapped_column(String(16))  # "hourly" | "daily": the limit that deferred the last one
    limit_value: Mapped[int]
    deferred: Mapped[int] = mapped_column(default=1)  # recipients deferred since opened_at
    next_slot_at: Mapped[datetime | None]
    channel: Mapped[str | None] = mapped_column(String(32))
    ts: Mapped[str | None] = mapped_column(String(32))
    shown: Mapped[int] = mapped_column(default=0)  # the count the posted message shows
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class HomeViewer(Base):
    """Someone who has opened the App Home: whose Home tab to republish when what it shows changes, which page they
    are on, and when it was last republished for a change (at most once every few seconds per user)."""

    __tablename__ = "home_viewers"

    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(32), index=True)
    page: Mapped[int] = mapped_column(default=0)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None]


class VerificationStep(Base):
    """One of the three checks of an identity. State changes are conditional updates, so a result or a
    timeout is applied exactly once even with several processes."""

    __tablename__ = "verification_steps"
    __table_args__ = (UniqueConstraint("identity_id", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    step: Mapped[StepName] = mapped_column(vocabulary(StepName, "step"))
    status: Mapped[StepStatus] = mapped_column(vocabulary(StepStatus, "status"), default=StepStatus.NOT_RUN)
    attempt: Mapped[int] = mapped_column(default=0)
    detail: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    verified_at: Mapped[datetime | None]
    # Tracking: the token the response email carries, and when to give up waiting for its copy.
    token: Mapped[str | None] = mapped_column(String(64), unique=True)
    deadline: Mapped[datetime | None] = mapped_column(index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OtpChallenge(Base):
    """A one-time password sent to the forwarding address. Only a keyed HMAC of the code is kept."""

    __tablename__ = "otp_challenges"

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    code_hmac: Mapped[str] = mapped_column(String(128))
    sent_to: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    failed_attempts: Mapped[int] = mapped_column(default=0)
    # Set once, with why the code stopped working (used, locked, expired, replaced, reset).
    closed_at: Mapped[datetime | None]
    closed_reason: Mapped[OtpCloseReason | None] = mapped_column(vocabulary(OtpCloseReason, "closed_reason"))
