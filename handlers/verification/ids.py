"""The verification feature's ids: the panel's buttons and blocks and the OTP modal. Each string is typed once."""

from __future__ import annotations

from enum import StrEnum


class Verification(StrEnum):
    send_test_email = "verify-sending"
    send_otp = "verify-receiving-send"
    enter_otp = "verify-receiving-enter"
    send_response = "verify-tracking"
    otp_callback = "otp-form"
    otp_block = "otp"
    otp_done_callback = "otp-form-done"
    steps_actions = "identity-actions"  # Change limits (and, as features land, more) under the Testing section

    @staticmethod
    def step_block(step: str) -> str:
        """The section of one step in the panel ("step-sending")."""
        return f"step-{step}"

    @staticmethod
    def step_actions(step: str) -> str:
        """The buttons of one step ("step-sending-actions")."""
        return f"step-{step}-actions"
