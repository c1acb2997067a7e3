"""What went wrong when an identity logs in with "Sign in with Microsoft / Google" (OAuth, XOAUTH2), in words a
team lead can act on: sign in again, the administrator setting to change, try later, or the wrong mailbox.

`diagnose_sign_in` maps what the token endpoint and the XOAUTH2 login raised; the others are built directly."""

from __future__ import annotations

from bot.mail.diagnosis import Diagnosis, reply_text, sanitize, where
from bot.mail.oauth import MICROSOFT, GrantRevoked, ProviderError, ProviderUnreachable
from bot.mail.xoauth2 import Bearer, SmtpAuthDisabled, XOAuth2Error, XOAuth2NotOffered, XOAuth2Rejected

SIGN_IN_AGAIN = "sign_in_again"
SMTP_AUTH_DISABLED = "smtp_auth_disabled"
PROVIDER_UNREACHABLE = "provider_unreachable"
APP_REFUSED = "oauth_app_refused"
WRONG_MAILBOX = "wrong_mailbox"
XOAUTH2_NOT_OFFERED = "xoauth2_not_offered"
CODES = (SIGN_IN_AGAIN, SMTP_AUTH_DISABLED, PROVIDER_UNREACHABLE, APP_REFUSED, WRONG_MAILBOX, XOAUTH2_NOT_OFFERED)


def sign_in_again(label: str) -> Diagnosis:
    return Diagnosis(
        SIGN_IN_AGAIN,
        f"{label} no longer accepts this identity's sign-in: the access was revoked or has expired (a password "
        "change or an administrator can end it).",
        f"Sign in again: open the identity's settings (/identity edit) and click Sign in with {label}.",
    )


def smtp_auth_disabled(address: str, code: int | None, message: str | None, *, certain: bool) -> Diagnosis:
    mailbox = sanitize(address, 80) or "the mailbox"
    problem = (
        "Microsoft 365 refused the login because SMTP AUTH is turned off for this mailbox or for the whole "
        f"organisation{reply_text(code, message)}."
        if certain
        else f"Microsoft 365 refused the signed-in login{reply_text(code, message)}. Usually SMTP AUTH is turned off "
        "for this mailbox or for the organisation."
    )
    return Diagnosis(
        SMTP_AUTH_DISABLED,
        problem,
        "Ask a Microsoft 365 administrator to turn on Authenticated SMTP for the mailbox (admin center → Users → "
        f"Active users → {mailbox} → Mail → Manage email apps), or in Exchange Online PowerShell: Set-CASMailbox "
        f"-Identity {mailbox} -SmtpClientAuthenticationDisabled $false (for the whole organisation: "
        "Set-TransportConfig -SmtpClientAuthenticationDisabled $false). Then test again.",
    )


def provider_unreachable(label: str) -> Diagnosis:
    return Diagnosis(
        PROVIDER_UNREACHABLE,
        f"{label}'s sign-in service could not be reached to renew the identity's access.",
        "Try again in a few minutes; nothing needs to change.",
    )


def app_refused(label: str, error: str) -> Diagnosis:
    variable = label.upper()
    return Diagnosis(
        APP_REFUSED,
        f"{label} refused the bot's app registration ({sanitize(error, 40)}).",
        f"Ask the bot's administrator to check {variable}_CLIENT_ID and {variable}_CLIENT_SECRET (an expired client "
        "secret is the usual cause).",
    )


def wrong_mailbox(label: str, signed_in: str, address: str) -> Diagnosis:
    return Diagnosis(
        WRONG_MAILBOX,
        f"You signed in with {label} as {sanitize(signed_in, 80)}, but this identity's address is "
        f"{sanitize(address, 80)}.",
        f"Sign in with {label} again as {sanitize(address, 80)} (pick that account), or change the identity's address.",
    )


def diagnose_sign_in(exc: BaseException, *, bearer: Bearer, address: str, host: str, port: int) -> Diagnosis | None:
    """What a failure of the token endpoint or of the XOAUTH2 login means; None for other failures."""
    label = bearer.label
    if isinstance(exc, GrantRevoked):
        return sign_in_again(label)
    if isinstance(exc, ProviderUnreachable):
        return provider_unreachable(label)
    if isinstance(exc, ProviderError):
        return app_refused(label, exc.error)
    if isinstance(exc, SmtpAuthDisabled):
        return smtp_auth_disabled(address, exc.code, exc.message, certain=True)
    if isinstance(exc, XOAuth2Rejected):
        if bearer.provider == MICROSOFT:  # 535 5.7.3 to a freshly renewed token
            return smtp_auth_disabled(address, exc.code, exc.message, certain=False)
        return sign_in_again(label)
    if isinstance(exc, XOAuth2NotOffered):
        return Diagnosis(
            XOAUTH2_NOT_OFFERED,
            f"{where(host, port)} does not offer sign-in with {label} (AUTH XOAUTH2).",
            "Ask the bot's administrator to check the provider's SMTP server setting.",
        )
    if isinstance(exc, XOAuth2Error):
        return Diagnosis(
            "unexpected",
            f"The mail server refused the signed-in login{reply_text(exc.code, exc.message)}.",
            f"Try again; if it keeps failing, sign in with {label} again.",
        )
    return None
