"""The verification feature in Slack: the panel's step buttons and the OTP modal."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.services.registry import Services
from handlers.errors import ack_only, guarded
from handlers.verification.ids import Verification as V
from handlers.verification.listeners import VerificationListeners


def register(app: AsyncApp, services: Services) -> None:
    checks = VerificationListeners(services)
    app.action(V.send_test_email)(guarded(checks.send_test_email))
    app.action(V.send_otp)(guarded(checks.send_otp))
    app.action(V.enter_otp)(guarded(checks.enter_otp))
    app.action(V.send_response)(guarded(checks.send_response))
    app.view(V.otp_callback)(guarded(checks.submit_otp))
    app.view(V.otp_done_callback)(ack_only)
