"""The evidence on a limit request (use of the current limits over 7 days, bounce and complaint rates, health), the
end of a time-boxed increase, and the messages around limits the gateway hit."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject, MarkdownTextObject, SectionBlock

from bot.services.limits.evidence import EVIDENCE_DAYS, rates_of
from bot.services.limits.time_boxes import EXPIRED, REPLACED
from bot.services.rates import MAX_BOUNCE_RATE, MAX_COMPLAINT_RATE
from handlers.blocks import Message, context, escape, limits_text, slack_date
from handlers.limits.ids import Limits as L
from models import Identity, IdentityHealth, LimitNotice, LimitRequest

HEALTH_WORDS = {
    IdentityHealth.HEALTHY: ":large_green_circle: healthy",
    IdentityHealth.NEEDS_ATTENTION: ":large_yellow_circle: needs attention",
    IdentityHealth.PAUSED: ":red_circle: paused",
}


def until_text(request: LimitRequest) -> str:
    """ " until <last day>" for a time-boxed request, else nothing."""
    if request.until is None:
        return ""
    return f" until {slack_date(request.until)}"


def box_state(request: LimitRequest) -> str:
    """How a time-boxed increase stands, after "Approved by …"."""
    if request.until is None:
        return ""
    if request.ended_at is None:
        return f".\n:stopwatch: In force until {slack_date(request.until)}; then the limits go back by themselves."
    if request.ended_by == EXPIRED:
        return f".\n:stopwatch: Ended on {slack_date(request.ended_at)}: the limits went back."
    if request.ended_by == REPLACED:
        return f".\n:stopwatch: Replaced on {slack_date(request.ended_at)} by a later change of the limits."
    if request.ended_by == "deleted":
        return ".\n:stopwatch: Ended: the identity was deleted."
    return (
        f".\n:stopwatch: Ended early by <@{request.ended_by}> on {slack_date(request.ended_at)}: the limits went back."
    )


def end_increase_actions(identity: Identity, request: LimitRequest) -> ActionsBlock:
    back = limits_text(request.revert_hourly or request.previous_hourly, request.revert_daily or request.previous_daily)
    return ActionsBlock(
        block_id=L.decision_block,
        elements=[
            ButtonElement(
                text="End now",
                action_id=L.end_increase,
                value=str(request.id),
                confirm=ConfirmObject(
                    title="End the increase now?",
                    text=f"{identity.address} goes back to {back} at once.",
                    confirm="End now",
                    deny="Cancel",
                ),
            )
        ],
    )


def _percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def evidence_blocks(evidence: dict[str, Any] | None) -> list[Block]:
    """What a manager decides on: use of the limits in force when asked, over the last 7 days."""
    if not evidence:
        return []
    hourly, daily = int(evidence.get("hourly_limit", 0)), int(evidence.get("daily_limit", 0))
    days = evidence.get("days") or []
    rates = rates_of(evidence)
    per_day = " · ".join(str(n) for n in days)
    use = (
        f"*Last {EVIDENCE_DAYS} days* (limits then: {limits_text(hourly, daily)})\n"
        f"Sent {evidence.get('sent', 0)} emails (recipients); per day, oldest first: {per_day}\n"
        f"Busiest day {evidence.get('busiest_day', 0)} of {daily} · busiest hour {evidence.get('busiest_hour', 0)} "
        f"of {hourly}\n"
        f"Daily limit reached on {evidence.get('days_at_limit', 0)} day(s), hourly limit in "
        f"{evidence.get('hours_at_limit', 0)} hour(s); {evidence.get('deferred', 0)} recipient(s) deferred"
    )
    judged = "" if rates.judged else " _(too little mail to judge)_"
    bounce_flag = " :warning:" if rates.judged and rates.bounce_rate > MAX_BOUNCE_RATE else ""
    complaint_flag = " :warning:" if rates.judged and rates.complaint_rate > MAX_COMPLAINT_RATE else ""
    health = HEALTH_WORDS.get(evidence.get("health", ""), evidence.get("health", ""))
    reason = f" — {escape(evidence['health_reason'])}" if evidence.get("health_reason") else ""
    quality = (
        f"*Bounces* {_percent(rates.bounce_rate)} ({rates.hard_bounces} of {rates.sent}){bounce_flag} · "
        f"*Complaints* {_percent(rates.complaint_rate)} ({rates.complaints}){complaint_flag}{judged}\n"
        f"*Health* {health}{reason}"
    )
    return [SectionBlock(text=MarkdownTextObject(text=use)), SectionBlock(text=MarkdownTextObject(text=quality))]


def increase_ended(identity: Identity, request: LimitRequest) -> Message:
    now = limits_text(identity.hourly_limit, identity.daily_limit)
    if request.ended_by == EXPIRED:
        why = f"The time-boxed increase of *{escape(identity.address)}* ended on {slack_date(request.ended_at)}"  # type: ignore[arg-type]
    else:
        why = (
            f"<@{request.ended_by}> ended the increase of *{escape(identity.address)}* early on "
            f"{slack_date(request.ended_at)}"  # type: ignore[arg-type]
        )
    return Message(
        text=f"The limit increase of {identity.address} ended. Limits now: {now}.",
        blocks=[SectionBlock(text=MarkdownTextObject(text=f":stopwatch: {why}. Limits now: *{now}*."))],
    )


def limit_reached(identity: Identity, notice: LimitNotice) -> Message:
    """Once per identity per hour when the gateway defers recipients for a limit; updated as the count grows."""
    which = "hourly" if notice.limit_name == "hourly" else "daily"
    limit = f"{notice.limit_value} emails (recipients) per {'hour' if which == 'hourly' else 'day'}"
    next_slot = f"the next slot frees {slack_date(notice.next_slot_at)}" if notice.next_slot_at else ""
    text = (
        f":no_entry: *{escape(identity.address)} reached its {which} limit* ({limit}): "
        f"*{notice.deferred}* recipient{'s' if notice.deferred != 1 else ''} deferred so far. The gateway answered "
        f"them `452` so the mailer tries again later; {next_slot}."
    )
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=text)),
        ActionsBlock(
            block_id=L.notice_actions,
            elements=[
                ButtonElement(text="Request increase", action_id=L.request_increase, value=f"{identity.id}:{notice.id}")
            ],
        ),
        context(
            f"Since {slack_date(notice.opened_at)} · <@{identity.created_by}> or a manager can ask for more with "
            "*Request increase*. One notice per identity per hour."
        ),
    ]
    return Message(
        text=f"{identity.address} reached its {which} limit: {notice.deferred} recipient(s) deferred so far.",
        blocks=blocks,
    )
