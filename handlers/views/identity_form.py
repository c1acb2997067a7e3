"""The identity modal (new identity) and the confirmation shown after saving."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from slack_sdk.models.blocks import (
    ActionsBlock,
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
)
from slack_sdk.models.views import View

from handlers.ids import IdentityForm as F
from handlers.ids import versioned
from handlers.views.common import context, escape, limits_text
from models.tables import DEFAULT_DAILY_LIMIT, DEFAULT_HOURLY_LIMIT, MAX_DAILY_LIMIT


@dataclass
class FormMeta:
    """What the modal carries in private_metadata (never secrets: it round-trips through Slack)."""

    channel: str | None = None
    address_version: int = 1

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | None) -> FormMeta:
        try:
            data = json.loads(raw or "{}")
        except ValueError:
            data = {}
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class FormValues:
    kind: str = "platform"
    display_name: str | None = None
    company_name: str | None = None
    address: str | None = None
    hourly_limit: str | None = str(DEFAULT_HOURLY_LIMIT)
    daily_limit: str | None = str(DEFAULT_DAILY_LIMIT)
    forwarding_address: str | None = None
    notices_channel: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _text_input(
    block: str, label: str, value: str | None, *, placeholder: str, max_length: int, hint: str | None = None
) -> InputBlock:
    return InputBlock(
        block_id=block,
        label=label,
        hint=hint,
        element=PlainTextInputElement(
            action_id=F.value, initial_value=value or None, placeholder=placeholder, max_length=max_length
        ),
    )


def identity_form(
    values: FormValues, meta: FormMeta, *, platform_domain: str, notice: str | None = None
) -> View:
    """The 'New email identity' modal."""
    kind_option = Option(
        value="platform",
        label="Platform domain (recommended)",
        description="An address under our domain: lower bounce rates, managed reputation, leads sorted for you.",
    )
    blocks = [
        InputBlock(
            block_id=F.kind,
            label="Kind of identity",
            element=RadioButtonsElement(action_id=F.value, options=[kind_option], initial_option=kind_option),
        ),
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
        InputBlock(
            block_id=versioned(F.address, meta.address_version),
            label="Email address",
            hint=f"Must end in @{platform_domain}. Click Auto create to make one from the display name.",
            element=PlainTextInputElement(
                action_id=F.value,
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
        DividerBlock(),
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
            element=NumberInputElement(
                action_id=F.value, is_decimal_allowed=False, initial_value=values.hourly_limit or None
            ),
        ),
        InputBlock(
            block_id=F.daily_limit,
            label="Email sending limit per day",
            element=NumberInputElement(
                action_id=F.value, is_decimal_allowed=False, initial_value=values.daily_limit or None
            ),
        ),
        DividerBlock(),
        InputBlock(
            block_id=F.forwarding_address,
            label="Response forwarding address",
            hint="Responses from leads are forwarded to this mailbox.",
            element=EmailInputElement(
                action_id=F.value,
                initial_value=values.forwarding_address or None,
                placeholder="you@yourcompany.com",
            ),
        ),
        InputBlock(
            block_id=F.notices_channel,
            label="Channel for verification notices",
            element=ConversationSelectElement(
                action_id=F.value,
                initial_conversation=values.notices_channel or meta.channel or None,
                filter=ConversationFilter(include=["public", "private"], exclude_bot_users=True),
            ),
        ),
        context("Save changes stores the identity and posts its details to the channel."),
    ]
    return View(
        type="modal",
        callback_id=F.callback,
        title="New email identity",
        submit="Save changes",
        close="Cancel",
        private_metadata=meta.dumps(),
        blocks=blocks,
    )


def saved_view(address: str, channel: str, *, increase_requested: str | None) -> View:
    """Replaces the form after a successful save."""
    lines = [f":white_check_mark: *{escape(address)}* is saved. Its details are in <#{channel}>."]
    if increase_requested:
        lines.append(
            f"Your limit increase to {increase_requested} is waiting for a manager; "
            "until then the identity sends at the defaults."
        )
    lines.append("Next: run the three verification steps before sending with it.")
    return View(
        type="modal",
        callback_id=F.saved_callback,
        title="Identity saved",
        close="Done",
        blocks=[SectionBlock(text=MarkdownTextObject(text="\n".join(lines)))],
    )
