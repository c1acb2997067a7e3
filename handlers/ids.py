"""Every callback_id, block_id and action_id in one place: no string is typed twice, tests import the same names."""

from __future__ import annotations

from enum import StrEnum

COMMAND = "/identity"


class IdentityForm(StrEnum):
    callback = "identity-form"
    saved_callback = "identity-form-saved"
    kind = "kind"  # dispatches: switching the kind rebuilds the form in place
    kind_changed = "identity-kind-changed"
    display_name = "display_name"
    company_name = "company_name"
    address = "address"  # versioned: "address#2" after Auto create replaces the value
    auto_create_block = "address_actions"
    auto_create = "identity-auto-create"
    hourly_limit = "hourly_limit"
    daily_limit = "daily_limit"
    forwarding_address = "forwarding_address"
    notices_channel = "notices_channel"
    provider = "provider"  # dispatches: fills host, port and security
    provider_changed = "identity-provider-changed"
    smtp_host = "smtp_host"  # versioned with the provider
    smtp_port = "smtp_port"
    smtp_security = "smtp_security"
    smtp_username = "smtp_username"
    smtp_password = "smtp_password"
    test_block = "test_setup_actions"
    test_setup = "identity-test-setup"
    test_result = "test_result"
    tracking = "tracking"
    value = "value"  # action_id of every plain input element


class Verification(StrEnum):
    send_test_email = "verify-sending"
    send_otp = "verify-receiving-send"
    enter_otp = "verify-receiving-enter"
    send_response = "verify-tracking"
    otp_callback = "otp-form"
    otp_block = "otp"
    otp_done_callback = "otp-form-done"


class Limits(StrEnum):
    open = "limits-open"  # "Change limits" on the identity panel
    callback = "limits-form"
    done_callback = "limits-form-done"
    hourly_limit = "hourly_limit"
    daily_limit = "daily_limit"
    reason = "reason"
    approve = "limit-request-approve"
    deny = "limit-request-deny"
    decision_block = "decision"


def versioned(block_id: str, version: int) -> str:
    """A block_id that changes when the app must replace what the user typed (Slack keeps typed values
    for as long as block_id and action_id stay the same)."""
    return block_id if version <= 1 else f"{block_id}#{version}"


def base_block_id(block_id: str) -> str:
    return block_id.split("#", 1)[0]
