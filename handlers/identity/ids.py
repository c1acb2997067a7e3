"""The identity feature's ids: the slash command, and every callback_id, block_id and action_id of the identity
modal. Each string is typed once, here; views, listeners and tests import the names."""

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
    sign_in_block = "sign_in_actions"  # "Sign in with Microsoft / Google" (URL button) and its companions
    sign_in = "identity-sign-in"
    sign_in_status = "sign_in"  # the section saying who is signed in (also where sign-in errors belong)
    use_password = "identity-use-password"
    test_block = "test_setup_actions"
    test_setup = "identity-test-setup"
    test_result = "test_result"
    tracking = "tracking"


class Lifecycle(StrEnum):
    """/identity disable | enable | delete, and the delete confirmation modal."""

    delete_callback = "identity-delete"
    deleted_callback = "identity-deleted"
