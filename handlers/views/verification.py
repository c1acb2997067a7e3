"""The identity panel (details + the "Testing" section with its three steps) and the step history replies."""

from __future__ import annotations

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.services.sending_limits import LimitDecision
from bot.services.otp import LIFETIME
from bot.services.verification import STEP_LABELS, CodeSent, StepEvent
from handlers.ids import Limits as L
from handlers.ids import Verification as V
from handlers.views.common import context, escape, slack_date
from handlers.views.identity_messages import Message, identity_details
from handlers.views.limits import usage_blocks
from models import Identity, LimitRequest, StepName, StepStatus, VerificationStep

STEP_HELP = {
    StepName.SENDING: "Sends a real test email as this identity.",
    StepName.RECEIVING: "Emails a one-time password to the response forwarding address; enter it here.",
    StepName.TRACKING: "Sends a response email to this identity; its copy must reach the CC tracking address.",
}
BUTTONS = {
    StepName.SENDING: [("Send Test Email", V.send_test_email)],
    StepName.RECEIVING: [("Send Test Response Email", V.send_otp), ("Enter OTP", V.enter_otp)],
    StepName.TRACKING: [("Send Response Email", V.send_response)],
}


def step_status_text(name: StepName, step: VerificationStep | None) -> str:
    label = STEP_LABELS[name]
    if step is None or step.status == StepStatus.NOT_RUN.value:
        note = f" _{escape(step.detail)}_" if step is not None and step.detail else ""
        return f":white_circle: Not run yet.{note}"
    if step.status == StepStatus.PENDING.value:
        if name == StepName.RECEIVING:
            return ":hourglass_flowing_sand: Code sent: enter the one-time password from the email."
        if name == StepName.TRACKING:
            return ":hourglass_flowing_sand: In progress: waiting for the copy at the CC tracking address."
        return ":hourglass_flowing_sand: In progress…"
    if step.status == StepStatus.VERIFIED.value and step.verified_at is not None:
        return f":white_check_mark: *{label} Verified* on {slack_date(step.verified_at)}"
    when = f" on {slack_date(step.finished_at)}" if step.finished_at else ""
    return f":x: *Failed*{when}: {escape(step.detail)}"


def testing_blocks(identity: Identity, steps: dict[str, VerificationStep]) -> list[Block]:
    blocks: list[Block] = [
        DividerBlock(),
        SectionBlock(text=MarkdownTextObject(text="*Testing* — three checks before this identity is used.")),
    ]
    for n, name in enumerate(StepName, start=1):
        step = steps.get(name.value)
        blocks.append(
            SectionBlock(
                block_id=f"step-{name.value}",
                text=MarkdownTextObject(
                    text=f"*{n}. {STEP_LABELS[name]}* — {STEP_HELP[name]}\n{step_status_text(name, step)}"
                ),
            )
        )
        busy = step is not None and step.status == StepStatus.PENDING.value and name != StepName.RECEIVING
        blocks.append(
            ActionsBlock(
                block_id=f"step-{name.value}-actions",
                elements=[
                    ButtonElement(text=("Running…" if busy else text), action_id=action, value=str(identity.id))
                    for text, action in BUTTONS[name]
                ],
            )
        )
    if identity.status == "ready":
        blocks.append(SectionBlock(text=MarkdownTextObject(text=":tada: *Email identity is ready to use.*")))
    blocks.append(
        ActionsBlock(
            block_id="identity-actions",
            elements=[ButtonElement(text="Change limits", action_id=L.open, value=str(identity.id))],
        )
    )
    return blocks


def identity_panel(
    identity: Identity, steps: dict[str, VerificationStep], request: LimitRequest | None = None, *, new: bool = False
) -> Message:
    title = f"{'New email identity' if new else 'Email identity'}: {identity.display_name}"[:150]
    verified = sum(1 for s in steps.values() if s.status == StepStatus.VERIFIED.value)
    state = "ready to use" if identity.status == "ready" else f"{verified} of 3 checks verified"
    return Message(
        text=f"{title} <{identity.address}> — {'Ready to use' if identity.status == 'ready' else 'Not verified'} "
        f"({state}).",
        blocks=[
            HeaderBlock(text=title),
            *identity_details(identity, request),
            *testing_blocks(identity, steps),
            context(f"Created by <@{identity.created_by}> on {slack_date(identity.created_at)}"),
        ],
    )


def identity_overview(
    identity: Identity, steps: dict[str, VerificationStep], usage: LimitDecision, request: LimitRequest | None
) -> Message:
    """`/identity show`: details, usage against the limits, and where verification stands."""
    lines = [f"*{STEP_LABELS[name]}:* {step_status_text(name, steps.get(name.value))}" for name in StepName]
    return Message(
        text=f"{identity.display_name} <{identity.address}>: sent {usage.sent_last_hour}/{identity.hourly_limit} "
        f"in the last hour, {usage.sent_last_day}/{identity.daily_limit} in the last 24 hours.",
        blocks=[
            HeaderBlock(text=f"Email identity: {identity.display_name}"[:150]),
            *identity_details(identity, request),
            *usage_blocks(identity, usage),
            SectionBlock(text=MarkdownTextObject(text="\n".join(lines))),
        ],
    )


def step_event_message(identity: Identity, event: StepEvent) -> Message:
    icon = {"verified": ":white_check_mark:", "failed": ":x:", "pending": ":hourglass_flowing_sand:"}.get(
        event.status, ":information_source:"
    )
    by = f" (by <@{event.actor}>)" if event.actor and event.actor.startswith(("U", "W")) else ""
    text = f"{icon} {slack_date(event.at)} — {escape(event.text)}{by}"
    return Message(
        text=f"{identity.address}: {event.text}",
        blocks=[SectionBlock(text=MarkdownTextObject(text=text[:3000]))],
    )


def ready_message(identity: Identity) -> Message:
    return Message(
        text=f"Email identity is ready to use: {identity.address}",
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text=f":tada: *Email identity is ready to use:* {escape(identity.display_name)} "
                    f"<{escape(identity.address)}> passed Sending, Receiving and Tracking."
                )
            )
        ],
    )


def otp_form(identity_id: int, identity: Identity | None = None) -> View:
    """The OTP modal. Opened at once from the button (trigger ids expire); the identity's details follow."""
    if identity is not None:
        text = (
            f"We emailed a one-time password to *{escape(identity.forwarding_address)}* for "
            f"*{escape(identity.address)}*. Enter the 6 digits from that email. It is valid for 10 minutes."
        )
    else:
        text = "Enter the 6 digits from the email with your one-time password. It is valid for 10 minutes."
    return View(
        type="modal",
        callback_id=V.otp_callback,
        title="Receiving verification",
        submit="Verify",
        close="Cancel",
        private_metadata=str(identity_id),
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=text)),
            InputBlock(
                block_id=V.otp_block,
                label="One-time password",
                element=PlainTextInputElement(action_id="value", placeholder="123456", max_length=12),
            ),
        ],
    )


def otp_done(identity: Identity) -> View:
    return View(
        type="modal",
        callback_id=V.otp_done_callback,
        title="Receiving verification",
        close="Done",
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text=f":white_check_mark: *Receiving Verified* for {escape(identity.address)}: responses reach "
                    f"{escape(identity.forwarding_address)}."
                )
            )
        ],
    )


def code_sent_text(outcome: CodeSent) -> str:
    """What the person who asked for a one-time password hears: where it went, or that it did not go and why."""
    if not outcome.sent:
        return (
            f":x: The code could not be emailed to {escape(outcome.to)}: {escape(outcome.problem or '')} "
            "Fix the response forwarding address (or ask an administrator about the mail relay), then click "
            "*Send Test Response Email* again."
        )
    minutes = int(LIFETIME.total_seconds() // 60)
    return (
        f":envelope: A one-time password was emailed to {escape(outcome.to)} ({escape(outcome.route or '')}); it is "
        f"valid for {minutes} minutes. Click *Enter OTP* when it arrives."
    )
