"""The three verification steps (Sending, Receiving with a one-time password, Tracking) and their outcomes."""

from bot.services.verification.otp import (
    CodeProblem,
    DailyCodeLimit,
    OtpChallenges,
    OtpCheck,
    ReceivingLocked,
    ResendTooSoon,
)
from bot.services.verification.outcomes import AlreadyRunning, CodeSent, Recorded
from bot.services.verification.service import VerificationService

__all__ = [
    "AlreadyRunning",
    "CodeProblem",
    "CodeSent",
    "DailyCodeLimit",
    "OtpChallenges",
    "OtpCheck",
    "ReceivingLocked",
    "Recorded",
    "ResendTooSoon",
    "VerificationService",
]
