""" "Sign in with Microsoft / Google" in the company-domain form: the button beside the password, and once signed in,
who is signed in (with Sign in again and Use a password instead) in place of the server and password inputs."""

from __future__ import annotations

from dataclasses import dataclass

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, MarkdownTextObject, SectionBlock

from bot.services.identities.sign_in import MailboxSignIn
from bot.services.notifier import SignInProblem
from handlers.blocks import base_block_id, escape
from handlers.identity.ids import IdentityForm as F
from models import IdentityKind

# Inputs a signed-in form does not have: the provider's own server is used, and the token replaces the password.
REPLACED_BY_SIGN_IN = {F.smtp_host, F.smtp_port, F.smtp_security, F.smtp_username, F.smtp_password}

PROBLEMS = {
    SignInProblem.DECLINED: "The sign-in with {label} was cancelled or not allowed (an administrator may have to "
    "approve the app first).",
    SignInProblem.SCOPE_NOT_GRANTED: "{label} did not grant the permission to send email: sign in again and leave it "
    "ticked.",
    SignInProblem.UNREACHABLE: "{label} could not be reached to finish the sign-in: try again in a few minutes.",
    SignInProblem.FAILED: "{label} did not complete the sign-in: please try again.",
}


@dataclass(frozen=True)
class SignInOffer:
    """The provider's sign-in for this modal: its name and the button's link (None: shown without a button)."""

    label: str
    link: str | None


def same_mailbox(a: str | None, b: str | None) -> bool:
    return bool(a and b) and (a or "").strip().lower() == (b or "").strip().lower()


def with_sign_in(
    server: list[Block],
    login: list[Block],
    *,
    signed_in_as: str | None,
    address: str | None,
    problem: str | None,
    offer: SignInOffer,
) -> list[Block]:
    """The company form's SMTP part with the sign-in: offered beside the password, or in place of it."""
    blocks = server + login
    if signed_in_as:
        blocks = [b for b in blocks if base_block_id(b.block_id or "") not in REPLACED_BY_SIGN_IN]
        added = signed_in_blocks(offer, signed_in_as, address)
    else:
        added = offer_blocks(offer, problem)
    at = next((i for i, b in enumerate(blocks) if b.block_id == F.test_block), len(blocks))
    return blocks[:at] + added + blocks[at:]


def offer_blocks(offer: SignInOffer, problem: str | None) -> list[Block]:
    text = (
        f"*Or sign in with {offer.label}* instead of a password: no app password needed, and it keeps working "
        "where basic authentication is switched off. Your browser opens; come back here afterwards."
    )
    if problem in PROBLEMS.keys():
        text += "\n:x: " + PROBLEMS[SignInProblem(problem)].format(label=offer.label)
    blocks: list[Block] = [SectionBlock(block_id=F.sign_in_status, text=MarkdownTextObject(text=text))]
    if offer.link:
        button = ButtonElement(text=f"Sign in with {offer.label}", action_id=F.sign_in, url=offer.link, value="sign-in")
        blocks.append(ActionsBlock(block_id=F.sign_in_block, elements=[button]))
    return blocks


def signed_in_blocks(offer: SignInOffer, mailbox: str, address: str | None) -> list[Block]:
    lines = [
        f":white_check_mark: Signed in with {offer.label} as *{escape(mailbox)}*. Mail goes out through "
        f"{offer.label}'s own server with this sign-in: no password is stored."
    ]
    if address and not same_mailbox(mailbox, address):
        lines.append(
            f":warning: That is not this identity's address ({escape(address)}): it will not save. Sign in again as "
            f"{escape(address)}, or change the address."
        )
    elements = [ButtonElement(text="Use a password instead", action_id=F.use_password, value="password")]
    if offer.link:
        elements.insert(
            0,
            ButtonElement(text=f"Sign in with {offer.label} again", action_id=F.sign_in, url=offer.link, value="again"),
        )
    return [
        SectionBlock(block_id=F.sign_in_status, text=MarkdownTextObject(text="\n".join(lines))),
        ActionsBlock(block_id=F.sign_in_block, elements=elements),
    ]


def sign_in_offer(
    sign_in: MailboxSignIn, provider: str | None, *, kind: str, user: str, view_id: str
) -> SignInOffer | None:
    """The chosen provider's sign-in for this user's modal, when it is offered (company form, provider configured)."""
    if kind != IdentityKind.COMPANY:
        return None
    offered = sign_in.offered(provider)
    if offered is None:
        return None
    return SignInOffer(offered.label, sign_in.link(offered.name, slack_user_id=user, view_id=view_id))
