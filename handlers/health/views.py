"""Health in Slack: the Health line of the panel and /identity show, the message posted when an identity's health
changes (what broke, the likely cause, the fix, the record to publish), and its buttons."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    MarkdownTextObject,
    SectionBlock,
)

from bot.mail.sign_in_diagnosis import SIGN_IN_AGAIN
from bot.services.health.checks import COPY_MISSING, LOGIN, PASSWORD_REFUSED, TRACKING
from bot.services.health.state import percent
from bot.services.notifier import HealthEvent, HealthFinding, HealthNotice
from bot.services.rates import MAX_BOUNCE_RATE, MAX_COMPLAINT_RATE, RATE_WINDOW
from handlers.blocks import Message, context, escape, slack_date
from handlers.health.ids import Health as H
from models import CheckOutcome, Identity, IdentityHealth, IdentityKind, IdentityStatus

CHECK_LABELS = {
    LOGIN: "Login",
    TRACKING: "CC tracking",
    "spf": "SPF",
    "dmarc": "DMARC",
    "dkim": "DKIM",
    "interrupted": "Checks",
}
STATE_LABELS = {
    IdentityHealth.HEALTHY: ":white_check_mark: *Healthy*",
    IdentityHealth.NEEDS_ATTENTION: ":warning: *Needs attention*",
    IdentityHealth.PAUSED: ":double_vertical_bar: *Paused*",
}
OUTCOME_WORDS: dict[str, str] = {
    CheckOutcome.PASSED: "every check passed",
    CheckOutcome.WARNINGS: "passed, with advice",
    CheckOutcome.PROBLEMS: "found problems",
    CheckOutcome.INCOMPLETE: "some checks could not run and are tried again at the next check",
}
RERUN = "Re-run checks"
RESUME = "Resume"
MAX_SECTION = 2900


def health_line(identity: Identity) -> str:
    """State, reason, and the last check's time and result (mrkdwn)."""
    state = IdentityHealth(identity.health or IdentityHealth.HEALTHY)
    line = f"*Health:* {STATE_LABELS[state]}"
    if state != IdentityHealth.HEALTHY and identity.health_reason:
        line += f": {escape(identity.health_reason)}"
    if identity.health_checked_at is not None:
        outcome = OUTCOME_WORDS.get(identity.health_check_outcome or "", "")
        line += f"\nLast checked {slack_date(identity.health_checked_at)}: {outcome}."
    else:
        line += "\nNot checked yet: the health checks run on a schedule."
    return line


def _shows_health(identity: Identity) -> bool:
    """Once the identity is in service, or was ever checked or paused."""
    fresh = identity.health == IdentityHealth.HEALTHY and identity.health_checked_at is None
    return identity.status == IdentityStatus.READY or not fresh


def health_blocks(identity: Identity) -> list[Block]:
    """The panel's Health line, with a Re-run checks button."""
    if not _shows_health(identity):
        return []
    rerun = ButtonElement(text=RERUN, action_id=H.rerun, value=str(identity.id))
    text = MarkdownTextObject(text=health_line(identity)[:3000])
    return [SectionBlock(block_id=H.status_block, text=text, accessory=rerun)]


def health_overview(identity: Identity, findings: Sequence[HealthFinding]) -> list[Block]:
    """/identity show: the Health line and what the last check found that was not fine."""
    if not _shows_health(identity):
        return []
    noted = [f for f in findings if f.status != "ok"]
    line = SectionBlock(block_id=H.status_block, text=MarkdownTextObject(text=health_line(identity)[:3000]))
    return [line, *_sections(identity, noted)][:20]


def _likely_cause(identity: Identity, finding: HealthFinding) -> str:
    """What probably happened and what to do, for the problems people hit most."""
    if finding.check == LOGIN and finding.code in PASSWORD_REFUSED:
        return (
            "the mail server refused the password — the app password was probably revoked (Google and Microsoft "
            "revoke app passwords when the account's password changes); create a new one and run *Edit* "
            f"(`/identity edit {escape(identity.address)}`). _{escape(finding.message)}_"
        )
    if finding.check == LOGIN and finding.code == SIGN_IN_AGAIN:
        return f"{escape(finding.message)} Click *Sign in again* (it opens the identity's settings)."
    if finding.check == TRACKING and finding.code == COPY_MISSING:
        tracking = escape(identity.tracking_address or finding.subject)
        return (
            f"the probe's copy never reached the CC tracking address `{tracking}` — the forwarder to it was "
            f"probably removed from the mailbox {escape(identity.address)} (or a rule now holds the mail). Add "
            f"`{tracking}` back as a forwarder: Gmail: Settings → Forwarding and POP/IMAP → Add a forwarding address; "
            "Outlook: Settings → Mail → Forwarding (keep a copy)."
        )
    return " ".join(escape(x) for x in (finding.message, finding.fix) if x)


def finding_text(identity: Identity, finding: HealthFinding) -> str:
    label = CHECK_LABELS.get(finding.check, finding.check)
    if finding.status == "unknown":
        why = f" ({escape(finding.message)})" if finding.message else ""
        return f":grey_question: *{label}:* could not be checked this time{why}; it is tried again at the next check."
    icon = ":x:" if finding.status == "problem" else ":bulb:"
    text = f"{icon} *{label}:* {_likely_cause(identity, finding)}"
    if finding.carried:
        text += " _(found at an earlier check; it could not be checked this time)_"
    if finding.record:
        text += f"\n```{escape(finding.record)}```"
        if identity.kind == IdentityKind.PLATFORM:
            text += "\n_This is the platform's domain: the Identity Bot administrator publishes its records._"
    return text[:MAX_SECTION]


def _sections(identity: Identity, findings: Sequence[HealthFinding]) -> list[Block]:
    return [SectionBlock(text=MarkdownTextObject(text=finding_text(identity, f))) for f in findings]


def health_actions(identity: Identity, findings: Sequence[HealthFinding] = ()) -> ActionsBlock:
    """Re-run checks; Resume when paused; Edit (Sign in again for a revoked sign-in) when the login failed."""
    value = str(identity.id)
    elements = [ButtonElement(text=RERUN, action_id=H.rerun, value=value)]
    login = next((f for f in findings if f.check == LOGIN and f.status == "problem"), None)
    if login is not None:
        label = "Sign in again" if login.code == SIGN_IN_AGAIN else "Edit"
        elements.append(ButtonElement(text=label, action_id=H.edit, value=value))
    if identity.health == IdentityHealth.PAUSED:
        elements.append(
            ButtonElement(
                text=RESUME,
                action_id=H.resume,
                value=value,
                style="danger",
                confirm=ConfirmObject(
                    title="Resume sending?",
                    text=f"Mail sent as {identity.address} through the gateway goes out again at once. Clean the "
                    "list first: addresses that bounced are already suppressed.",
                    confirm=RESUME,
                    deny="Cancel",
                ),
            )
        )
    return ActionsBlock(block_id=H.actions, elements=elements)


def _who(identity: Identity) -> str:
    return f"{escape(identity.display_name)} <{escape(identity.address)}>"


def health_message(identity: Identity, notice: HealthNotice, *, mention: str | None = None) -> Message:
    """The one message in the identity's channel when its health changes."""
    problems = [f for f in notice.findings if f.status == "problem"]
    advice = [f for f in notice.findings if f.status == "warning"]
    when = context(f"Checked {slack_date(notice.at)}")
    if notice.event == HealthEvent.NEEDS_ATTENTION:
        ping = f" {mention_token(mention)}" if mention else ""
        head = f":warning: *{_who(identity)} needs attention*{ping}: what broke, the likely cause and the fix."
        text = f"{identity.address} needs attention: {identity.health_reason or 'a check failed'}."
        blocks = [_section(head), *_sections(identity, problems + advice), when, health_actions(identity, problems)]
        return Message(text=text, blocks=blocks)
    if notice.event == HealthEvent.HEALTHY_AGAIN:
        head = f":white_check_mark: *{_who(identity)} is healthy again*: every check passed."
        blocks = [_section(head), *_sections(identity, advice), when]
        return Message(text=f"{identity.address} is healthy again.", blocks=blocks)
    if notice.event == HealthEvent.PAUSED:
        return _paused(identity, notice)
    by = f" by <@{notice.actor}>" if notice.actor else ""
    head = (
        f":arrow_forward: *{_who(identity)} was resumed*{by}: mail sent as it goes out again. Its bounce and "
        "complaint rates count afresh from now."
    )
    return Message(text=f"{identity.address} was resumed{by}.", blocks=[_section(head), context(slack_date(notice.at))])


def _paused(identity: Identity, notice: HealthNotice) -> Message:
    days = RATE_WINDOW.days
    bounce = notice.hard_bounces / notice.sent if notice.sent else 0.0
    complaint = notice.complaints / notice.sent if notice.sent else 0.0
    head = (
        f":double_vertical_bar: *{_who(identity)} is paused*: {escape(identity.health_reason)}.\n"
        f"In the last {days} days it sent {notice.sent} emails: {notice.hard_bounces} hard bounces "
        f"({percent(bounce)}) and {notice.complaints} spam complaints ({percent(complaint)}). The mailbox "
        f"providers' line is {percent(MAX_BOUNCE_RATE)} hard bounces and {percent(MAX_COMPLAINT_RATE)} complaints; "
        "over it they start blocking the domain. Mail sent as this identity through the gateway is deferred "
        "(`451 4.7.1`, the mailer keeps it) until a manager resumes it. Check the list it was sent to first."
    )
    return Message(
        text=f"{identity.address} is paused: {identity.health_reason}.",
        blocks=[_section(head), context(slack_date(notice.at)), health_actions(identity)],
    )


def checked_message(identity: Identity, notice: HealthNotice) -> Message:
    """For whoever clicked Re-run checks, when the run changed nothing."""
    problems = [f for f in notice.findings if f.status == "problem"]
    others = [f for f in notice.findings if f.status in ("warning", "unknown")]
    if problems:
        head = f":warning: The checks of {_who(identity)} finished: it still needs attention."
    else:
        head = f":white_check_mark: The checks of {_who(identity)} finished: nothing is broken."
    blocks = [_section(head), *_sections(identity, problems + others)]
    if problems or identity.health == IdentityHealth.PAUSED:
        blocks.append(health_actions(identity, problems))
    return Message(text=f"The checks of {identity.address} finished.", blocks=blocks[:50])


def mention_token(mention: str) -> str:
    """HEALTH_MENTION: a user group (S…) or `here` / `channel`."""
    if mention in ("here", "channel"):
        return f"<!{mention}>"
    return f"<!subteam^{mention}>"


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text[:3000]))


def rerun_started(identity: Identity) -> str:
    tracking = " and the CC tracking probe" if identity.kind == IdentityKind.COMPANY else ""
    return (
        f":hourglass_flowing_sand: Checking {escape(identity.address)}: the login, DNS{tracking}. A change is posted "
        "in the channel; otherwise I'll tell you here."
    )


def already_running(identity: Identity) -> str:
    return f":hourglass_flowing_sand: The checks of {escape(identity.address)} are already running."


def not_paused(identity: Identity) -> str:
    return f"{escape(identity.address)} is not paused (any more): nothing to resume."
