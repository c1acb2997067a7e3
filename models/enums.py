"""The product's vocabularies: every status and kind stored in the database, one StrEnum each.

The columns holding them are CHECK-constrained to exactly these values (migration 0005), so a typo can never be
stored; code compares against the members, never against string literals."""

from __future__ import annotations

import enum


class IdentityKind(enum.StrEnum):
    PLATFORM = "platform"  # an address on the platform domain, sent through the platform relay
    COMPANY = "company"  # the customer's own address, sent through the customer's SMTP server


class IdentityStatus(enum.StrEnum):
    NOT_VERIFIED = "not_verified"
    READY = "ready"


class StepName(enum.StrEnum):
    SENDING = "sending"
    RECEIVING = "receiving"
    TRACKING = "tracking"


class StepStatus(enum.StrEnum):
    NOT_RUN = "not_run"
    PENDING = "pending"
    VERIFIED = "verified"
    FAILED = "failed"


class LimitRequestStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    SUPERSEDED = "superseded"


class SmtpSecurity(enum.StrEnum):
    """How a session to a mail server is protected. Customer servers use STARTTLS or SSL; NONE is only for the
    platform's own relay and loopback servers."""

    STARTTLS = "starttls"
    SSL = "ssl"
    NONE = "none"


class OtpCloseReason(enum.StrEnum):
    """Why a one-time password stopped working."""

    USED = "used"
    LOCKED = "locked"
    EXPIRED = "expired"
    REPLACED = "replaced"
    RESET = "reset"  # the forwarding address changed after it was sent


class MessageKind(enum.StrEnum):
    """What an incoming message is, as the classifier decided."""

    VERIFICATION = "verification"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto_reply"
    LOOP = "loop"
    LIST_MANAGER = "list_manager"  # a mailing-list manager's notice (held, rejected, confirm, loop alert)
    UNSUBSCRIBE = "unsubscribe"
    LEAD = "lead"
    OPERATOR = "operator"  # mail to postmaster@ or abuse@ our domains: for the operator, posted to OPS_CHANNEL


class Attribution(enum.StrEnum):
    """How a bounce, complaint or unsubscribe request was matched to mail the team really sent (or that it was
    not: then it changes nothing)."""

    VERP = "verp"  # it arrived at a per-recipient return path bounces+<token>@<platform domain>
    MESSAGE_ID = "message_id"  # it quotes the Message-ID of a message the team sent to that recipient
    MAILED = "mailed"  # an unsubscribe request from an address the team has mailed
    UNMATCHED = "unmatched"  # none of the above: stored and counted, nothing suppressed


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"


class SlotState(enum.StrEnum):
    """A sending slot in the sliding window: one recipient of one message."""

    RESERVED = "reserved"  # taken at RCPT and counted from then on; a crash mid-relay keeps it counted (the safe side)
    SENT = "sent"  # the upstream server accepted the message for this recipient


class MailboxProvider(enum.StrEnum):
    """Whose "Sign in with …" a company identity sends with (OAuth 2.0 and SMTP XOAUTH2)."""

    MICROSOFT = "microsoft"
    GOOGLE = "google"


class IdentityHealth(enum.StrEnum):
    """How an identity is doing after verification (the scheduled re-checks and its bounce and complaint rates).
    Separate from IdentityStatus: a ready identity can need attention, and a paused one sends nothing."""

    HEALTHY = "healthy"
    NEEDS_ATTENTION = "needs_attention"  # a check found a problem; the identity still sends
    PAUSED = "paused"  # bounce or complaint rate over the line: the gateway defers its mail until a manager resumes it


class CheckOutcome(enum.StrEnum):
    """What one run of an identity's health checks (services/health) found, all checks together."""

    PASSED = "passed"
    WARNINGS = "warnings"  # advice only (e.g. DMARC p=none): the identity stays healthy
    PROBLEMS = "problems"  # something is broken: the identity needs attention
    INCOMPLETE = "incomplete"  # some checks could not run (DNS timeout, our relay down): nothing concluded from them


class IdentityLifecycle(enum.StrEnum):
    """Whether an identity is in use, switched off, or deleted. Separate from verification (IdentityStatus) and health:
    a disabled identity keeps its verification and receives mail; a deleted one is kept (audit trail, attribution of
    late reports) and its address is held for a while before it can be used again."""

    ACTIVE = "active"
    DISABLED = "disabled"  # the gateway refuses its mail (550 5.7.1); inbound mail is still accepted and forwarded
    DELETED = "deleted"  # credentials revoked, checks stopped; its address still receives until released
