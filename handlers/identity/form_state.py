"""What the identity modal carries between Slack's round trips (FormMeta, in private_metadata) and what it shows
(FormValues): the state the form's listeners read and the view (form_view.py) renders."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum

from models import IdentityKind
from models.tables import DEFAULT_DAILY_LIMIT, DEFAULT_HOURLY_LIMIT


class FormMode(StrEnum):
    NEW = "new"
    EDIT = "edit"


class SetupTest(StrEnum):
    """Where the form's "Test email setup" stands."""

    NOT_RUN = "none"
    TESTING = "testing"
    PASSED = "ok"
    FAILED = "failed"


@dataclass
class FormMeta:
    """What the modal carries in private_metadata. Never secrets: it round-trips through Slack. `tested` is a
    keyed HMAC of the SMTP settings (password included) that last passed "Test email setup"."""

    mode: str = FormMode.NEW
    identity_id: int | None = None
    channel: str | None = None
    kind: str = IdentityKind.PLATFORM
    address_version: int = 1
    smtp_version: int = 1
    tracking_address: str | None = None
    tested: str | None = None
    test_state: str = SetupTest.NOT_RUN
    test_message: str | None = None
    sign_in: str | None = None  # signed in with Microsoft/Google as this mailbox (instead of a password)
    sign_in_problem: str | None = None  # why the last sign-in gave no mailbox (SignInProblem)
    password_again: bool = False  # edit: the server settings changed, so the saved password can't be kept

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
    """What the form shows. Never holds the SMTP password: Slack keeps what was typed in that input."""

    kind: str = IdentityKind.PLATFORM
    display_name: str | None = None
    company_name: str | None = None
    address: str | None = None
    hourly_limit: str | None = str(DEFAULT_HOURLY_LIMIT)
    daily_limit: str | None = str(DEFAULT_DAILY_LIMIT)
    forwarding_address: str | None = None
    notices_channel: str | None = None
    provider: str | None = None
    smtp_host: str | None = None
    smtp_port: str | None = None
    smtp_security: str | None = None
    smtp_username: str | None = None
