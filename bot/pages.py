"""The few pages the bot shows in a browser (not Slack): where "Sign in with Microsoft / Google" ends.

Each says what happened and what to do next, in one short paragraph; nothing from the request is echoed back."""

from __future__ import annotations

import html

from bot.services.identities.sign_in import Refusal
from bot.services.notifier import SignInOutcome, SignInProblem

TITLE = "Identity Bot"

REFUSALS = {
    Refusal.MALFORMED: "This sign-in link is not valid.",
    Refusal.BAD_SIGNATURE: "This sign-in link is not valid.",
    Refusal.EXPIRED: "This sign-in link has expired.",
    Refusal.USED: "This sign-in was already used, or it has expired.",
    Refusal.NOT_OFFERED: "This sign-in is not available.",
}
START_AGAIN = "Nothing was changed. Go back to the identity form in Slack and click the Sign in button again."

PROBLEMS = {
    SignInProblem.DECLINED: "The sign-in with {label} was cancelled or not allowed.",
    SignInProblem.SCOPE_NOT_GRANTED: "{label} did not grant the permission to send email, which the bot needs.",
    SignInProblem.UNREACHABLE: "{label} could not be reached to finish the sign-in.",
    SignInProblem.FAILED: "{label} did not complete the sign-in.",
}
PROBLEM_ADVICE = {
    SignInProblem.DECLINED: "If your organisation needs an administrator to approve the app, ask them first.",
    SignInProblem.SCOPE_NOT_GRANTED: "Sign in again and leave the “send email” permission ticked.",
    SignInProblem.UNREACHABLE: "Try again in a few minutes.",
    SignInProblem.FAILED: "Try again from Slack.",
}


def signed_in(outcome: SignInOutcome) -> str:
    if outcome.mailbox:
        return _page(
            f"Signed in with {outcome.label} as {outcome.mailbox}.",
            "You can close this tab and go back to Slack: the identity form shows the mailbox.",
        )
    problem = outcome.problem or SignInProblem.FAILED
    return _page(
        PROBLEMS[problem].format(label=outcome.label),
        PROBLEM_ADVICE[problem] + " You can close this tab; the identity form in Slack says so too.",
    )


def refused(reason: Refusal) -> str:
    return _page(REFUSALS[reason], START_AGAIN)


def _page(headline: str, advice: str) -> str:
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{TITLE}</title><body style='font-family:sans-serif;max-width:36em;margin:3em auto'>"
        f"<h1 style='font-size:1.3em'>{html.escape(headline)}</h1><p>{html.escape(advice)}</p></body></html>"
    )
