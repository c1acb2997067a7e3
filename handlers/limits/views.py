"""The Change limits modal, the approval request with its buttons, and the messages around a decision."""

from __future__ import annotations

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    DatePickerElement,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    NumberInputElement,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.services.gateway.window import LimitDecision
from bot.services.limits import ChangeOutcome, LimitChange
from bot.services.limits.rules import MAX_TIME_BOX_DAYS
from handlers.blocks import INPUT_ACTION, RECIPIENTS_HINT, Message, context, escape, limits_text, slack_date
from handlers.limits.evidence_view import box_state, end_increase_actions, evidence_blocks, until_text
from handlers.limits.ids import Limits as L
from models import Identity, LimitRequest, LimitRequestStatus
from models.tables import DEFAULT_DAILY_LIMIT, DEFAULT_HOURLY_LIMIT, MAX_DAILY_LIMIT


def limits_form(
    identity: Identity,
    pending: LimitRequest | None,
    *,
    suggested: tuple[int, int] | None = None,
    reason: str | None = None,
) -> View:
    """The Change limits modal; `suggested` and `reason` prefill it (from a limit-reached notice)."""
    hourly, daily = suggested or (identity.hourly_limit, identity.daily_limit)
    blocks: list[Block] = [
        SectionBlock(
            text=MarkdownTextObject(
                text=f"*{escape(identity.display_name)}* <{escape(identity.address)}> sends at most "
                f"*{limits_text(identity.hourly_limit, identity.daily_limit)}*.\n"
                f"Lowering applies at once. Raising above the defaults "
                f"({limits_text(DEFAULT_HOURLY_LIMIT, DEFAULT_DAILY_LIMIT)}) needs a manager's approval. "
                f"The daily limit can be at most *{MAX_DAILY_LIMIT}*."
            )
        ),
    ]
    if pending is not None:
        blocks.append(
            context(
                f":hourglass_flowing_sand: A request for "
                f"{limits_text(pending.requested_hourly, pending.requested_daily)} is waiting for a manager; "
                "a new change replaces it."
            )
        )
    blocks += limits_inputs(hourly, daily, reason)
    return View(
        type="modal",
        callback_id=L.callback,
        title="Change limits",
        submit="Save",
        close="Cancel",
        private_metadata=str(identity.id),
        blocks=blocks,
    )


def limits_inputs(hourly: int, daily: int, reason: str | None) -> list[Block]:
    """The form's inputs: both limits (prefilled), the optional last day of an increase, the reason managers see."""
    return [
        InputBlock(
            block_id=L.hourly_limit,
            label="Email sending limit per hour",
            hint=RECIPIENTS_HINT,
            element=NumberInputElement(action_id=INPUT_ACTION, is_decimal_allowed=False, initial_value=str(hourly)),
        ),
        InputBlock(
            block_id=L.daily_limit,
            label="Email sending limit per day",
            hint=RECIPIENTS_HINT,
            element=NumberInputElement(action_id=INPUT_ACTION, is_decimal_allowed=False, initial_value=str(daily)),
        ),
        InputBlock(
            block_id=L.until,
            label="Until (optional)",
            optional=True,
            hint=f"For an increase: the last day it applies, at most {MAX_TIME_BOX_DAYS} days ahead; then the limits "
            "go back by themselves. Leave empty for a permanent change.",
            element=DatePickerElement(action_id=INPUT_ACTION, placeholder="Pick the last day"),
        ),
        InputBlock(
            block_id=L.reason,
            label="Reason",
            optional=True,
            hint="Managers see this with the request.",
            element=PlainTextInputElement(
                action_id=INPUT_ACTION,
                multiline=True,
                max_length=500,
                placeholder="Why does this identity need to send more?",
                initial_value=reason,
            ),
        ),
    ]


def limits_done(change: LimitChange) -> View:
    identity = change.identity
    if change.outcome == ChangeOutcome.REQUESTED and change.request is not None:
        r = change.request
        text = (
            f":hourglass_flowing_sand: Your request to raise *{escape(identity.address)}* to "
            f"*{limits_text(r.requested_hourly, r.requested_daily)}*{until_text(r)} went to the managers. Until one "
            f"approves, it keeps sending at {limits_text(identity.hourly_limit, identity.daily_limit)}."
        )
    elif change.outcome == ChangeOutcome.APPLIED:
        text = (
            f":white_check_mark: *{escape(identity.address)}* now sends at most "
            f"*{limits_text(identity.hourly_limit, identity.daily_limit)}*, starting now."
        )
    else:
        text = "Nothing changed: these are already the identity's limits."
    return View(
        type="modal",
        callback_id=L.done_callback,
        title="Change limits",
        close="Done",
        blocks=[SectionBlock(text=MarkdownTextObject(text=text))],
    )


def _request_fields(identity: Identity, request: LimitRequest) -> SectionBlock:
    return SectionBlock(
        fields=[
            MarkdownTextObject(text=f"*Identity*\n{escape(identity.display_name)} <{escape(identity.address)}>"),
            MarkdownTextObject(text=f"*Requested by*\n<@{request.requested_by}>"),
            MarkdownTextObject(
                text=f"*Limits*\n{limits_text(request.previous_hourly, request.previous_daily)} → "
                f"*{limits_text(request.requested_hourly, request.requested_daily)}*{until_text(request)}"
            ),
            MarkdownTextObject(text=f"*Reason*\n{escape(request.reason) if request.reason else '_none given_'}"),
        ]
    )


def decision_text(request: LimitRequest) -> str:
    if request.status == LimitRequestStatus.APPROVED:
        when = slack_date(request.decided_at)  # type: ignore[arg-type]
        return f":white_check_mark: *Approved* by <@{request.decided_by}> on {when}{box_state(request)}"
    if request.status == LimitRequestStatus.DENIED:
        return f":no_entry: *Denied* by <@{request.decided_by}> on {slack_date(request.decided_at)}"  # type: ignore[arg-type]
    if request.status == LimitRequestStatus.SUPERSEDED:
        return ":fast_forward: *Superseded* by a newer request for this identity."
    return ":hourglass_flowing_sand: Waiting for a manager."


def decision_actions(identity: Identity, request: LimitRequest, *, block_id: str) -> ActionsBlock:
    """Approve and Deny, each asking for confirmation: on the request message and in managers' App Home."""
    value = str(request.id)
    return ActionsBlock(
        block_id=block_id,
        elements=[
            ButtonElement(
                text="Approve",
                action_id=L.approve,
                value=value,
                style="primary",
                confirm=ConfirmObject(
                    title="Approve the increase?",
                    text=f"{identity.address} will send up to "
                    f"{limits_text(request.requested_hourly, request.requested_daily)}, starting now.",
                    confirm="Approve",
                    deny="Cancel",
                ),
            ),
            ButtonElement(
                text="Deny",
                action_id=L.deny,
                value=value,
                style="danger",
                confirm=ConfirmObject(
                    title="Deny the increase?",
                    text=f"{identity.address} keeps its current limits.",
                    confirm="Deny",
                    deny="Cancel",
                ),
            ),
        ],
    )


def approval_request(identity: Identity, request: LimitRequest) -> Message:
    """What managers see; once decided the buttons give way to the decision, the decider and the time."""
    blocks: list[Block] = [
        HeaderBlock(text="Limit increase request"),
        _request_fields(identity, request),
        *evidence_blocks(request.evidence),
        context(f"Asked on {slack_date(request.created_at)}"),
    ]
    if request.status == LimitRequestStatus.PENDING:
        blocks.append(decision_actions(identity, request, block_id=L.decision_block))
    else:
        text = decision_text(request)
        if request.status == LimitRequestStatus.SUPERSEDED and identity.deleted_at is not None:
            text = ":wastebasket: *Closed*: the identity was deleted."
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
        if request.status == LimitRequestStatus.APPROVED and request.until is not None and request.ended_at is None:
            blocks.append(end_increase_actions(identity, request))
    status = {LimitRequestStatus.PENDING: "waiting for a manager"}.get(request.status, request.status)
    return Message(
        text=f"Limit increase request for {identity.address}: "
        f"{limits_text(request.requested_hourly, request.requested_daily)} ({status})",
        blocks=blocks,
    )


def decision_for_requester(identity: Identity, request: LimitRequest) -> Message:
    verb = "approved" if request.status == LimitRequestStatus.APPROVED else "denied"
    now = limits_text(identity.hourly_limit, identity.daily_limit)
    text = (
        f"<@{request.requested_by}> your request to raise *{escape(identity.address)}* to "
        f"{limits_text(request.requested_hourly, request.requested_daily)}{until_text(request)} was *{verb}* by "
        f"<@{request.decided_by}> "
        f"on {slack_date(request.decided_at)}. Limits now: *{now}*."  # type: ignore[arg-type]
    )
    return Message(
        text=f"Limit request for {identity.address} {verb}. Limits now: {now}.",
        blocks=[SectionBlock(text=MarkdownTextObject(text=text))],
    )


def limits_changed(identity: Identity, actor: str) -> Message:
    now = limits_text(identity.hourly_limit, identity.daily_limit)
    return Message(
        text=f"Limits of {identity.address} changed to {now}.",
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text=f":gear: <@{actor}> set the limits of *{escape(identity.address)}* to *{now}* on "
                    f"{slack_date(identity.updated_at)}. They apply at once."
                )
            )
        ],
    )


def already_decided(request: LimitRequest) -> str:
    if request.status == LimitRequestStatus.SUPERSEDED:
        return "This request was replaced by a newer one for the same identity; nothing changed."
    verb = "approved" if request.status == LimitRequestStatus.APPROVED else "denied"
    when = slack_date(request.decided_at) if request.decided_at else "earlier"
    return f"This request was already {verb} by <@{request.decided_by}> on {when}. Nothing changed."


def usage_blocks(identity: Identity, usage: LimitDecision) -> list[Block]:
    lines = [
        f"*Sent in the last hour:* {usage.sent_last_hour} of {identity.hourly_limit} emails (recipients)",
        f"*Sent in the last 24 hours:* {usage.sent_last_day} of {identity.daily_limit} emails (recipients)",
    ]
    if not usage.allowed and usage.retry_at is not None:
        lines.append(
            f":no_entry: The {usage.limit} limit is reached; the next email can go {slack_date(usage.retry_at)}."
        )
    lines.append("_Counted in recipients: a message to three people counts three._")
    return [SectionBlock(text=MarkdownTextObject(text="\n".join(lines)))]
