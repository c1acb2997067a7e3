"""The identity panel (details + the "Testing" section with its three steps) and the step history replies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

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

from bot.services.gateway.window import LimitDecision
from bot.services.notifier import HealthFinding, StepEvent
from bot.services.verification import CodeProblem, CodeSent, OtpCheck
from bot.services.verification.otp import CODE_DIGITS, CODES_PER_DAY, LIFETIME, LOCKS_IN_A_ROW, MAX_WRONG
from handlers.blocks import INPUT_ACTION, Message, context, escape, slack_date
from handlers.credentials.ids import Credentials as C
from handlers.details import identity_details
from handlers.health.views import health_blocks, health_overview
from handlers.limits.ids import Limits as L
from handlers.limits.views import usage_blocks
from handlers.verification.ids import Verification as V
from models import Identity, IdentityKind, IdentityStatus, LimitRequest, StepName, StepStatus, VerificationStep

STEP_LABELS = {StepName.SENDING: "Sending", StepName.RECEIVING: "Receiving", StepName.TRACKING: "Tracking"}
SEND_OTP = "Send Test Response Email"
ENTER_OTP = "Enter OTP"
OTP_TITLE = "Receiving verification"
LIFETIME_MINUTES = int(LIFETIME.total_seconds() // 60)

STEP_HELP = {
    StepName.SENDING: "Sends a real test email as this identity.",
    StepName.RECEIVING: "Emails a one-time password to the response forwarding address; enter it here.",
    StepName.TRACKING: "Sends a response email to this identity; its copy must reach the CC tracking address.",
}
BUTTONS = {
    StepName.SENDING: [("Send Test Email", V.send_test_email)],
    StepName.RECEIVING: [(SEND_OTP, V.send_otp), (ENTER_OTP, V.enter_otp)],
    StepName.TRACKING: [("Send Response Email", V.send_response)],
}


def step_status_text(name: StepName, step: VerificationStep | None) -> str:
    label = STEP_LABELS[name]
    if step is None or step.status == StepStatus.NOT_RUN:
        note = f" _{escape(step.detail)}_" if step is not None and step.detail else ""
        return f":white_circle: Not run yet.{note}"
    if step.status == StepStatus.PENDING:
        # A re-run of a verified step: it stays verified (and the identity in service) unless this run fails.
        still = (
            f" _{label} Verified on {slack_date(step.verified_at)} stands unless this run fails._"
            if step.verified_at
            else ""
        )
        if name == StepName.RECEIVING:
            return f":hourglass_flowing_sand: Code sent: enter the one-time password from the email.{still}"
        if name == StepName.TRACKING:
            return f":hourglass_flowing_sand: In progress: waiting for the copy at the CC tracking address.{still}"
        return f":hourglass_flowing_sand: In progress…{still}"
    if step.status == StepStatus.VERIFIED and step.verified_at is not None:
        return f":white_check_mark: *{label} Verified* on {slack_date(step.verified_at)}"
    when = f" on {slack_date(step.finished_at)}" if step.finished_at else ""
    return f":x: *Failed*{when}: {escape(step.detail)}"


def testing_blocks(identity: Identity, steps: dict[str, VerificationStep]) -> list[Block]:
    blocks: list[Block] = [
        DividerBlock(),
        SectionBlock(text=MarkdownTextObject(text="*Testing* — three checks before this identity is used.")),
    ]
    for n, name in enumerate(StepName, start=1):
        step = steps.get(name)
        blocks.append(
            SectionBlock(
                block_id=V.step_block(name),
                text=MarkdownTextObject(
                    text=f"*{n}. {STEP_LABELS[name]}* — {STEP_HELP[name]}\n{step_status_text(name, step)}"
                ),
            )
        )
        busy = step is not None and step.status == StepStatus.PENDING and name != StepName.RECEIVING
        blocks.append(
            ActionsBlock(
                block_id=V.step_actions(name),
                elements=[
                    ButtonElement(text=("Running…" if busy else text), action_id=action, value=str(identity.id))
                    for text, action in BUTTONS[name]
                ],
            )
        )
    if identity.status == IdentityStatus.READY:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=":tada: *Email identity is ready to use.*")))
    blocks.append(
        ActionsBlock(
            block_id=V.steps_actions,
            elements=[
                ButtonElement(text="Change limits", action_id=L.open, value=str(identity.id)),
                ButtonElement(text="Get SMTP credentials", action_id=C.open, value=str(identity.id)),
            ],
        )
    )
    return blocks


def identity_panel(
    identity: Identity, steps: dict[str, VerificationStep], request: LimitRequest | None = None, *, new: bool = False
) -> Message:
    title = f"{'New email identity' if new else 'Email identity'}: {identity.display_name}"[:150]
    verified = sum(1 for s in steps.values() if s.status == StepStatus.VERIFIED)
    ready = identity.status == IdentityStatus.READY
    state = "ready to use" if ready else f"{verified} of {len(StepName)} checks verified"
    return Message(
        text=f"{title} <{identity.address}> — {'Ready to use' if ready else 'Not verified'} ({state}).",
        blocks=[
            HeaderBlock(text=title),
            *identity_details(identity, request),
            *health_blocks(identity),
            *testing_blocks(identity, steps),
            context(f"Created by <@{identity.created_by}> on {slack_date(identity.created_at)}"),
        ],
    )


def identity_overview(
    identity: Identity,
    steps: dict[str, VerificationStep],
    usage: LimitDecision,
    request: LimitRequest | None,
    *,
    findings: Sequence[HealthFinding] = (),
) -> Message:
    """`/identity show`: details, usage against the limits, where verification stands, and health (with what the last
    check found)."""
    lines = [f"*{STEP_LABELS[name]}:* {step_status_text(name, steps.get(name))}" for name in StepName]
    return Message(
        text=f"{identity.display_name} <{identity.address}>: sent {usage.sent_last_hour}/{identity.hourly_limit} "
        f"emails (recipients) in the last hour, {usage.sent_last_day}/{identity.daily_limit} in the last 24 hours.",
        blocks=[
            HeaderBlock(text=f"Email identity: {identity.display_name}"[:150]),
            *identity_details(identity, request),
            *usage_blocks(identity, usage),
            SectionBlock(text=MarkdownTextObject(text="\n".join(lines))),
            *health_overview(identity, findings),
        ],
    )


def step_event_text(identity: Identity, event: StepEvent) -> str:
    """One line of the panel's history: what happened to a step."""
    label = STEP_LABELS[event.step]
    route = f" ({event.route})" if event.route else ""
    if event.status == StepStatus.VERIFIED:
        return f"{label} Verified"
    if event.status == StepStatus.FAILED:
        return f"{label} failed: {event.detail}"
    if event.status == StepStatus.NOT_RUN:
        names = " and ".join(STEP_LABELS[s] for s in event.reset or (event.step,))
        return f"{names} must be verified again: {event.detail}"
    if event.step == StepName.RECEIVING:
        return f"Receiving: a one-time password was emailed to {event.sent_to}{route}; valid {LIFETIME_MINUTES} minutes"
    if event.step == StepName.TRACKING:
        where = (
            f"the CC tracking address {identity.tracking_address}"
            if identity.kind == IdentityKind.COMPANY
            else "the platform's inbound server"
        )
        minutes = max(1, round(event.wait.total_seconds() / 60)) if event.wait else 0
        return (
            f"Tracking: response email sent to {event.sent_to}{route}; waiting up to {minutes} min for its copy at "
            f"{where}"
        )
    return "Sending: test email on its way"


def step_event_message(identity: Identity, event: StepEvent) -> Message:
    icon = {
        StepStatus.VERIFIED: ":white_check_mark:",
        StepStatus.FAILED: ":x:",
        StepStatus.PENDING: ":hourglass_flowing_sand:",
    }.get(event.status, ":information_source:")
    what = step_event_text(identity, event)
    by = f" (by <@{event.actor}>)" if event.actor and event.actor.startswith(("U", "W")) else ""
    text = f"{icon} {slack_date(event.at)} — {escape(what)}{by}"
    return Message(
        text=f"{identity.address}: {what}",
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


def otp_form(identity: Identity) -> View:
    """The OTP modal."""
    text = (
        f"We emailed a one-time password to *{escape(identity.forwarding_address)}* for "
        f"*{escape(identity.address)}*. Enter the {CODE_DIGITS} digits from that email. It is valid for "
        f"{LIFETIME_MINUTES} minutes."
    )
    return View(
        type="modal",
        callback_id=V.otp_callback,
        title=OTP_TITLE,
        submit="Verify",
        close="Cancel",
        private_metadata=str(identity.id),
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=text)),
            InputBlock(
                block_id=V.otp_block,
                label="One-time password",
                element=PlainTextInputElement(action_id=INPUT_ACTION, placeholder="123456", max_length=12),
            ),
        ],
    )


def otp_done(identity: Identity) -> View:
    return View(
        type="modal",
        callback_id=V.otp_done_callback,
        title=OTP_TITLE,
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
            f"*{SEND_OTP}* again."
        )
    return (
        f":envelope: A one-time password was emailed to {escape(outcome.to)} ({escape(outcome.route or '')}); it is "
        f"valid for {LIFETIME_MINUTES} minutes. Click *{ENTER_OTP}* when it arrives."
    )


CODE_PROBLEMS = {
    CodeProblem.NONE_SENT: f"No code has been sent yet. Click “{SEND_OTP}” first.",
    CodeProblem.USED: f"This code was already used. Click “{SEND_OTP}” for a new one.",
    CodeProblem.LOCKED: f"This code is locked after {MAX_WRONG} wrong tries. Click “{SEND_OTP}” for a new one.",
    CodeProblem.EXPIRED: (
        f"This code has expired (codes are valid for {LIFETIME_MINUTES} minutes). Click “{SEND_OTP}” for a new one."
    ),
    CodeProblem.REPLACED: f"A newer code was sent; use that one, or click “{SEND_OTP}” for a new one.",
    CodeProblem.RESET: (
        f"The response forwarding address changed since this code was sent. Click “{SEND_OTP}” for a new one."
    ),
    CodeProblem.OLD_ADDRESS: f"This code was sent to an earlier forwarding address. Click “{SEND_OTP}” for a new one.",
    CodeProblem.EARLIER_CHECK: f"This code belongs to an earlier check. Click “{SEND_OTP}” for a new one.",
}


def code_problem_text(check: OtpCheck) -> str:
    """Why a typed code did not verify, and what to do (shown on the OTP modal's input)."""
    left = check.attempts_left
    tries = f"{left} attempt{'s' if left != 1 else ''} left"
    if check.problem == CodeProblem.MALFORMED:
        return f"The code is the {CODE_DIGITS} digits from the email ({tries})."
    if check.problem == CodeProblem.WRONG:
        return f"That code is wrong. {tries.capitalize()}."
    if check.problem == CodeProblem.LOCKED and check.locked_until is not None:
        return (
            f"This code is locked after {MAX_WRONG} wrong tries, and {LOCKS_IN_A_ROW} codes in a row were locked: "
            f"no new code can be sent before {utc_text(check.locked_until)}."
        )
    return CODE_PROBLEMS.get(check.problem or CodeProblem.NONE_SENT, "This code no longer works.")


def utc_text(when: datetime) -> str:
    """An absolute time where Slack shows plain text (modal errors), e.g. "2026-11-27 14:05 UTC"."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def daily_code_limit(next_at: datetime) -> str:
    return (
        f":no_entry: {CODES_PER_DAY} one-time passwords were sent for this identity in the last 24 hours, the most "
        f"we send in a day. The next one can be sent from {slack_date(next_at)}."
    )


def receiving_locked(until: datetime) -> str:
    return (
        f":lock: Receiving is locked: {LOCKS_IN_A_ROW} one-time passwords in a row were locked after "
        f"{MAX_WRONG} wrong tries each. A new code can be sent from {slack_date(until)}."
    )


def not_ready_message(identity: Identity, event: StepEvent) -> Message:
    """A ready identity went out of service because a step failed."""
    label = STEP_LABELS[event.step]
    headline = f"{identity.address} is no longer ready to use: {label} failed"
    body = (
        f":warning: *{escape(headline)}*: {escape(event.detail)}\n"
        f"Until {label} passes again, mail sent as it through the submission gateway is refused."
    )
    return Message(text=f"{headline}.", blocks=[SectionBlock(text=MarkdownTextObject(text=body[:3000]))])


def receiving_locked_message(identity: Identity, until: datetime) -> Message:
    """For the channel: codes are being guessed (or mistyped) — nobody can ask for a new one for a while."""
    lines = (
        f":lock: *Receiving verification of {escape(identity.address)} is locked* until {slack_date(until)}: "
        f"{LOCKS_IN_A_ROW} one-time passwords in a row were locked after {MAX_WRONG} wrong tries each. If nobody "
        "here was entering codes, someone may be trying to guess them."
    )
    return Message(
        text=f"Receiving verification of {identity.address} is locked until {utc_text(until)}.",
        blocks=[SectionBlock(text=MarkdownTextObject(text=lines))],
    )


def resend_too_soon(seconds: int) -> str:
    return f":hourglass_flowing_sand: A code was sent moments ago. You can ask for a new one in {seconds} seconds."


def already_running(step: StepName) -> str:
    return f":hourglass_flowing_sand: {STEP_LABELS[step]} verification is already running."
