"""The few web pages the bot serves to people outside Slack: where "Sign in with Microsoft / Google" ends, and the
one-click unsubscribe pages (bot/web.py serves them).

Plain HTML, no scripts, nothing loaded from elsewhere; nothing from the request is echoed back. Each page says what
happened and what to do next. A GET never unsubscribes anyone (mail scanners follow links): it shows a button that
POSTs, which is also what RFC 8058 mail clients send directly."""

from __future__ import annotations

from html import escape

from bot.services.identities.sign_in import Refusal
from bot.services.notifier import SignInOutcome, SignInProblem

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem; color: #222; }}
button {{ font-size: 1rem; padding: .6rem 1.2rem; border-radius: .3rem; border: 0; background: #1d4ed8; color: #fff; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
</body>
</html>
"""


def masked(address: str) -> str:
    """Enough of the address for its owner to recognise it, not all of it for whoever else holds the link."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}{'•' * min(max(len(local) - 1, 1), 6)}@{domain}" if domain else "this address"


def _page(title: str, body: str) -> str:
    return _PAGE.format(title=escape(title), body=body)


def confirm(address: str) -> str:
    """GET: asks, changes nothing."""
    return _page(
        "Unsubscribe?",
        f"<p>Stop all email from this sender to <strong>{escape(masked(address))}</strong>?</p>\n"
        '<form method="post">\n<input type="hidden" name="List-Unsubscribe" value="One-Click">\n'
        '<button type="submit">Unsubscribe</button>\n</form>',
    )


def unsubscribed(address: str) -> str:
    return _page(
        "You are unsubscribed",
        f"<p><strong>{escape(masked(address))}</strong> will get no more email from this sender.</p>",
    )


def already_unsubscribed(address: str) -> str:
    return _page(
        "You are already unsubscribed",
        f"<p><strong>{escape(masked(address))}</strong> gets no email from this sender.</p>",
    )


def unknown_link() -> str:
    return _page(
        "This link is not valid",
        "<p>This unsubscribe link is not one we know; nothing was changed. "
        "If you copied it from an email, check that it was copied whole.</p>",
    )


# ---- the end of a sign-in ----------------------------------------------------------------------------------------

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
        return _advice(
            f"Signed in with {outcome.label} as {outcome.mailbox}.",
            "You can close this tab and go back to Slack: the identity form shows the mailbox.",
        )
    problem = outcome.problem or SignInProblem.FAILED
    return _advice(
        PROBLEMS[problem].format(label=outcome.label),
        PROBLEM_ADVICE[problem] + " You can close this tab; the identity form in Slack says so too.",
    )


def refused(reason: Refusal) -> str:
    return _advice(REFUSALS[reason], START_AGAIN)


def _advice(headline: str, advice: str) -> str:
    return _page(headline, f"<p>{escape(advice)}</p>")
