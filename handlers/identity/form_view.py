"""The identity modal (new and edit, platform and company domain) and the confirmation shown after saving."""

from __future__ import annotations

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConversationFilter,
    ConversationSelectElement,
    DividerBlock,
    EmailInputElement,
    InputBlock,
    MarkdownTextObject,
    NumberInputElement,
    Option,
    PlainTextInputElement,
    RadioButtonsElement,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot.services.identities.providers import PROVIDERS, SECURITY_LABELS
from handlers.blocks import INPUT_ACTION, KIND_LABELS, RECIPIENTS_HINT, context, escape, limits_text, versioned
from handlers.details import tracking_instructions
from handlers.identity.form_state import FormMeta, FormMode, FormValues, SetupTest
from handlers.identity.ids import COMMAND
from handlers.identity.ids import IdentityForm as F
from handlers.identity.sign_in_view import SignInOffer, with_sign_in
from models import IdentityKind
from models.tables import DEFAULT_DAILY_LIMIT, DEFAULT_HOURLY_LIMIT, MAX_DAILY_LIMIT

KIND_OPTIONS = {
    IdentityKind.PLATFORM: Option(
        value=IdentityKind.PLATFORM,
        label="Platform domain (recommended)",
        description="An address under our domain: managed reputation, fewer bounces, leads sorted for you.",
    ),
    IdentityKind.COMPANY: Option(
        value=IdentityKind.COMPANY,
        label="Company domain",
        description="Your own address, sent through your company's mail server (SMTP).",
    ),
}


def _option(value: str, label: str) -> Option:
    return Option(value=value, label=label)


def _text_input(
    block: str,
    label: str,
    value: str | None,
    *,
    placeholder: str,
    max_length: int,
    hint: str | None = None,
    optional: bool = False,
) -> InputBlock:
    return InputBlock(
        block_id=block,
        label=label,
        hint=hint,
        optional=optional,
        element=PlainTextInputElement(
            action_id=INPUT_ACTION, initial_value=value or None, placeholder=placeholder, max_length=max_length
        ),
    )


def _kind_blocks(values: FormValues, meta: FormMeta) -> list[Block]:
    if meta.mode == FormMode.EDIT:
        return [context(f"*Kind:* {KIND_LABELS.get(meta.kind, meta.kind)}")]
    return [
        InputBlock(
            block_id=F.kind,
            label="Kind of identity",
            dispatch_action=True,
            element=RadioButtonsElement(
                action_id=F.kind_changed, options=list(KIND_OPTIONS.values()), initial_option=KIND_OPTIONS[meta.kind]
            ),
        )
    ]


def _address_blocks(values: FormValues, meta: FormMeta, platform_domain: str, notice: str | None) -> list[Block]:
    if meta.mode == FormMode.EDIT:
        return [context(f"*Email address:* {escape(values.address or '')} (can't be changed)")]
    block_id = versioned(F.address, meta.address_version)
    if meta.kind == IdentityKind.COMPANY:
        return [
            InputBlock(
                block_id=block_id,
                label="Email address",
                hint="Your company mailbox the emails go out from, e.g. jane@yourcompany.com.",
                element=EmailInputElement(
                    action_id=INPUT_ACTION, initial_value=values.address or None, placeholder="jane@yourcompany.com"
                ),
            )
        ]
    return [
        InputBlock(
            block_id=block_id,
            label="Email address",
            hint=f"Must end in @{platform_domain}. Click Auto create to make one from the display name.",
            element=PlainTextInputElement(
                action_id=INPUT_ACTION,
                initial_value=values.address or None,
                placeholder=f"jane.doe@{platform_domain}",
                max_length=254,
            ),
        ),
        *([context(f":point_up: {notice}")] if notice else []),
        ActionsBlock(
            block_id=F.auto_create_block,
            elements=[ButtonElement(text="Auto create", action_id=F.auto_create, value="auto")],
        ),
    ]


def _limit_blocks(values: FormValues, meta: FormMeta, current: str | None) -> list[Block]:
    if meta.mode == FormMode.EDIT:
        address = escape(values.address or "")
        return [context(f"*Sending limits:* {current}. Change them with `{COMMAND} limits {address}`.")]
    return [
        SectionBlock(
            text=MarkdownTextObject(
                text=f"*Sending limits* — the defaults ({limits_text(DEFAULT_HOURLY_LIMIT, DEFAULT_DAILY_LIMIT)}) "
                f"are recommended. The daily limit can be at most *{MAX_DAILY_LIMIT}*. "
                "Raising a limit above the default needs a manager's approval."
            )
        ),
        InputBlock(
            block_id=F.hourly_limit,
            label="Email sending limit per hour",
            hint=RECIPIENTS_HINT,
            element=NumberInputElement(
                action_id=INPUT_ACTION, is_decimal_allowed=False, initial_value=values.hourly_limit or None
            ),
        ),
        InputBlock(
            block_id=F.daily_limit,
            label="Email sending limit per day",
            hint=RECIPIENTS_HINT,
            element=NumberInputElement(
                action_id=INPUT_ACTION, is_decimal_allowed=False, initial_value=values.daily_limit or None
            ),
        ),
    ]


def test_result_text(meta: FormMeta) -> str:
    if meta.test_state == SetupTest.TESTING:
        return ":hourglass_flowing_sand: Testing… connecting to your mail server."
    if meta.test_state == SetupTest.PASSED:
        return f":white_check_mark: *{escape(meta.test_message or '')}*"
    if meta.test_state == SetupTest.FAILED:
        return f":x: {escape(meta.test_message or '')}"
    return "Not tested yet. *Test email setup* runs a real session with these settings; saving needs a passing test."


def _smtp_blocks(values: FormValues, meta: FormMeta, sign_in: SignInOffer | None) -> list[Block]:
    server, login = _server_blocks(values, meta), _login_blocks(values, meta)
    if sign_in is None:
        return server + login
    return with_sign_in(
        server, login, signed_in_as=meta.sign_in, address=values.address, problem=meta.sign_in_problem, offer=sign_in
    )


def _server_blocks(values: FormValues, meta: FormMeta) -> list[Block]:
    """Which server: the provider (which fills the rest), host, port and security."""
    provider_options = {key: _option(key, p.label) for key, p in PROVIDERS.items()}
    security_options = {key: _option(key, label) for key, label in SECURITY_LABELS.items()}
    v = meta.smtp_version
    return [
        DividerBlock(),
        SectionBlock(
            text=MarkdownTextObject(
                text="*Email service (SMTP)* — the server your company sends its email through. "
                "Ask your IT administrator or email provider for the details if unsure."
            )
        ),
        InputBlock(
            block_id=F.provider,
            label="Email service provider",
            dispatch_action=True,
            element=StaticSelectElement(
                action_id=F.provider_changed,
                placeholder="Choose your provider",
                options=list(provider_options.values()),
                initial_option=provider_options.get(values.provider or ""),
            ),
        ),
        _text_input(
            versioned(F.smtp_host, v),
            "SMTP server",
            values.smtp_host,
            placeholder="smtp.yourcompany.com",
            max_length=253,
        ),
        InputBlock(
            block_id=versioned(F.smtp_port, v),
            label="SMTP port",
            element=NumberInputElement(
                action_id=INPUT_ACTION, is_decimal_allowed=False, initial_value=values.smtp_port or None
            ),
        ),
        InputBlock(
            block_id=versioned(F.smtp_security, v),
            label="Security",
            element=StaticSelectElement(
                action_id=INPUT_ACTION,
                options=list(security_options.values()),
                initial_option=security_options.get(values.smtp_security or ""),
            ),
        ),
    ]


def _login_blocks(values: FormValues, meta: FormMeta) -> list[Block]:
    """How to log in, the setup test with its result, and the CC tracking instructions."""
    provider = PROVIDERS.get(values.provider or "", None)
    keep = ""
    if meta.mode == FormMode.EDIT:
        keep = (
            " Type the password again: the server, port, security or username changed, and the saved password is "
            "only sent to the server it was saved for."
            if meta.password_again
            else " Leave empty to keep the saved password (while server, port, security and username stay the same)."
        )
    return [
        _text_input(
            F.smtp_username,
            "SMTP username",
            values.smtp_username,
            placeholder="Same as the email address",
            max_length=254,
            optional=True,
            hint="Leave empty to use the email address.",
        ),
        InputBlock(
            block_id=F.smtp_password,
            label="SMTP password",
            optional=meta.mode == FormMode.EDIT and not meta.password_again,
            hint=(provider.password_hint if provider else PROVIDERS["other"].password_hint) + keep,
            element=PlainTextInputElement(
                action_id=INPUT_ACTION, placeholder="16-character app password", max_length=200
            ),
        ),
        ActionsBlock(
            block_id=F.test_block,
            elements=[ButtonElement(text="Test email setup", action_id=F.test_setup, value="test", style="primary")],
        ),
        SectionBlock(block_id=F.test_result, text=MarkdownTextObject(text=test_result_text(meta))),
        DividerBlock(),
        SectionBlock(block_id=F.tracking, text=MarkdownTextObject(text=tracking_instructions(meta.tracking_address))),
    ]


def identity_form(
    values: FormValues,
    meta: FormMeta,
    *,
    platform_domain: str,
    notice: str | None = None,
    current_limits: str | None = None,
    sign_in: SignInOffer | None = None,
) -> View:
    """The 'New email identity' / 'Edit email identity' modal. `sign_in`: the chosen provider's "Sign in with …"."""
    blocks: list[Block] = [
        *_kind_blocks(values, meta),
        _text_input(
            F.display_name,
            "Sender's display name",
            values.display_name,
            placeholder="Jane Doe",
            max_length=100,
            hint="The name recipients see as the sender.",
        ),
        _text_input(
            F.company_name,
            "Sender company name",
            values.company_name,
            placeholder="Acme Inc.",
            max_length=100,
            hint="Helps recipients recognize who is writing.",
        ),
        *_address_blocks(values, meta, platform_domain, notice),
        DividerBlock(),
        *_limit_blocks(values, meta, current_limits),
    ]
    if meta.kind == IdentityKind.COMPANY:
        blocks += _smtp_blocks(values, meta, sign_in)
    blocks += _delivery_blocks(values, meta)
    return View(
        type="modal",
        callback_id=F.callback,
        title="Edit email identity" if meta.mode == FormMode.EDIT else "New email identity",
        submit="Save changes",
        close="Cancel",
        private_metadata=meta.dumps(),
        blocks=blocks,
    )


def _delivery_blocks(values: FormValues, meta: FormMeta) -> list[Block]:
    """Where responses go and where notices are posted."""
    return [
        DividerBlock(),
        InputBlock(
            block_id=F.forwarding_address,
            label="Response forwarding address",
            hint="Responses from leads are forwarded to this mailbox.",
            element=EmailInputElement(
                action_id=INPUT_ACTION,
                initial_value=values.forwarding_address or None,
                placeholder="you@yourcompany.com",
            ),
        ),
        InputBlock(
            block_id=F.notices_channel,
            label="Channel for verification notices",
            element=ConversationSelectElement(
                action_id=INPUT_ACTION,
                initial_conversation=values.notices_channel or meta.channel or None,
                filter=ConversationFilter(include=["public", "private"], exclude_bot_users=True),
            ),
        ),
        context("Save changes stores the identity and posts its details to the channel."),
    ]


def saved_view(
    address: str,
    channel: str,
    *,
    increase_requested: str | None,
    tracking_address: str | None = None,
    edited: bool = False,
) -> View:
    """Replaces the form after a successful save."""
    lines = [f":white_check_mark: *{escape(address)}* is saved. Its details are in <#{channel}>."]
    if increase_requested:
        lines.append(
            f"Your limit increase to {increase_requested} is waiting for a manager; "
            "until then the identity sends at the defaults."
        )
    if not edited:
        lines.append("Next: run the three verification steps before sending with it.")
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text="\n".join(lines)))]
    if tracking_address:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=tracking_instructions(tracking_address))))
    return View(
        type="modal",
        callback_id=F.saved_callback,
        title="Identity saved",
        close="Done",
        blocks=blocks,
    )


__all__ = ["FormMeta", "FormValues", "identity_form", "saved_view", "test_result_text"]
