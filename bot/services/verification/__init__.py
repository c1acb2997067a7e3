"""The three verification steps (Sending, Receiving with a one-time password, Tracking) and their outcomes."""

from bot.services.verification.otp import CodeProblem, OtpChallenges, OtpCheck, ResendTooSoon
from bot.services.verification.outcomes import AlreadyRunning, CodeSent, Recorded
from bot.services.verification.service import VerificationService

__all__ = [
    "AlreadyRunning",
    "CodeProblem",
    "CodeSent",
    "OtpChallenges",
    "OtpCheck",
    "Recorded",
    "ResendTooSoon",
    "VerificationService",
]
