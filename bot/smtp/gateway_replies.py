"""The words of every reply the submission gateway chooses (bot/smtp/gateway.py decides when each is given).
Mailers log these lines and people read them there: each says what happened and what to do."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.services.gateway import LimitDecision, Submitted
from models import Identity, Suppression, SuppressionReason

# RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients; more than that per message is refused (452).
MAX_RECIPIENTS = 100
SUPPRESSION_WORDS = {
    SuppressionReason.UNSUBSCRIBE: "unsubscribed",
    SuppressionReason.HARD_BOUNCE: "bounced",
    SuppressionReason.COMPLAINT: "complained (marked the mail as spam)",
}


class GatewayReplies:
    """Fixed replies as constants, the ones that name the identity, a recipient or the message as functions."""

    AUTH_OK = "235 2.7.0 Authentication successful"
    AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
    MAIL_OK = "250 2.1.0 Ok"
    RCPT_OK = "250 2.1.5 Ok"
    RSET_OK = "250 2.0.0 Ok"
    TOO_MANY_RECIPIENTS = f"452 4.5.3 Too many recipients (at most {MAX_RECIPIENTS} per message)"
    RELAYED = "250 2.0.0 Ok: relayed"
    RELAY_FAILED = "451 4.4.1 Could not relay: try again later"
    TEMPORARY_ERROR = "451 4.3.0 Temporary server error: try again later"
    NO_FROM = "550 5.6.0 The message needs a From header naming this identity"
    UNREADABLE = "554 5.6.0 The message could not be read: check its headers"
    # Not here because aiosmtpd answers them before any handler runs: MAIL before AUTH -> "530 5.7.0 Authentication
    # required"; AUTH without TLS off loopback -> "538 5.7.11 Encryption required"; too big -> 552; a 4th AUTH on
    # one connection -> "421 4.7.0 AUTH sent too many times" (the connection closes).

    @staticmethod
    def not_authorized(address: str) -> str:
        return f"553 5.7.1 Not authorized to send as {address}"

    @staticmethod
    def not_ready(address: str) -> str:
        return f"550 5.7.1 Identity {address} is not verified yet: run the three verification steps"

    @staticmethod
    def paused(identity: Identity) -> str:
        """Temporary: the mailer keeps the message and tries again, and it goes once a manager resumes the identity."""
        why = " ".join((identity.health_reason or "bounce or complaint rate over the line").split())[:300]
        return f"451 4.7.1 Identity {identity.address} paused: {why}; a manager can resume it in Slack"

    @staticmethod
    def disabled(address: str) -> str:
        return f"550 5.7.1 Identity {address} is disabled: its mail is not sent until it is enabled again"

    @staticmethod
    def header_not_authorized(address: str) -> str:
        return f"550 5.7.1 The From, Sender and Resent-From/-Sender headers may only name this identity, not {address}"

    @staticmethod
    def suppressed(address: str, suppression: Suppression) -> str:
        why = SUPPRESSION_WORDS.get(suppression.reason, "suppressed")
        return (
            f"550 5.7.1 <{address}> is on the suppression list: {why} on {suppression.created_at:%Y-%m-%d}; "
            "mail to this address is not sent"
        )

    @staticmethod
    def over_limit(identity: Identity, decision: LimitDecision, now: datetime) -> str:
        name = "Hourly" if decision.limit == "hourly" else "Daily"
        when = format_retry_at(decision.retry_at, now)
        return (
            f"452 4.5.3 {name} limit of {decision.limit_value} emails (recipients) reached for {identity.address}; "
            f"send to this recipient after {when}"
        )

    @staticmethod
    def partly_relayed(result: Submitted) -> str:
        return (
            f"250 2.0.0 Ok: relayed to {result.accepted} of {result.recipients} recipients; the receiving server "
            "refused the others, a delivery status notification names them"
        )

    @staticmethod
    def refused(result: Submitted) -> str:
        first = result.refusal
        quoted = f" (<{first.recipient}>: {first.code} {first.reply})" if first is not None else ""
        return f"554 5.0.0 The receiving server refused every recipient{quoted}"[:510]


def format_retry_at(retry_at: datetime | None, now: datetime) -> str:
    """'14:05 UTC' today, '2026-11-28 14:05 UTC' another day; rounded UP to the minute so a client that waits until
    then does find a free slot."""
    if retry_at is None:
        return "a while"
    rounded = retry_at.replace(second=0, microsecond=0)
    if rounded < retry_at:
        rounded += timedelta(minutes=1)
    if rounded.date() == now.date():
        return rounded.strftime("%H:%M UTC")
    return rounded.strftime("%Y-%m-%d %H:%M UTC")
