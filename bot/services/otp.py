"""One-time passwords for the Receiving step.

Each code comes from a fresh random secret (pyotp.HOTP over pyotp.random_base32()), so a code says nothing about
the next. The secret is thrown away; only a keyed HMAC of the code is stored. Codes are single use, expire after
ten minutes, lock after five wrong tries, and a new code replaces the old one (resending is throttled)."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from sqlalchemy import select, update

from bot.services.secrets import SecretBox
from models import Database, OtpChallenge
from models.base import utcnow

LIFETIME = timedelta(minutes=10)
MAX_WRONG = 5
RESEND_AFTER = timedelta(seconds=60)


class ResendTooSoon(Exception):
    def __init__(self, wait: timedelta) -> None:
        seconds = max(1, int(wait.total_seconds()) + 1)
        super().__init__(f"A code was sent moments ago. You can ask for a new one in {seconds} seconds.")
        self.wait = wait


@dataclass(frozen=True)
class OtpCheck:
    ok: bool
    message: str
    attempts_left: int = 0
    locked: bool = False


class OtpChallenges:
    def __init__(self, db: Database, secrets: SecretBox, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.secrets = secrets
        self.clock = clock

    def _mac(self, challenge_salt: str, code: str) -> str:
        return self.secrets.mac("otp", challenge_salt, code)

    async def issue(self, identity_id: int, sent_to: str) -> tuple[int, str]:
        """A new code for the identity (the previous one stops working). Returns (challenge id, code)."""
        now = self.clock()
        code = pyotp.HOTP(pyotp.random_base32(), digits=6).at(0)
        salt = pyotp.random_base32()
        async with self.db.transaction() as session:
            last = await session.scalar(
                select(OtpChallenge)
                .where(OtpChallenge.identity_id == identity_id)
                .order_by(OtpChallenge.created_at.desc(), OtpChallenge.id.desc())
                .limit(1)
            )
            if last is not None and now - last.created_at < RESEND_AFTER:
                raise ResendTooSoon(RESEND_AFTER - (now - last.created_at))
            await session.execute(
                update(OtpChallenge)
                .where(OtpChallenge.identity_id == identity_id, OtpChallenge.closed_at.is_(None))
                .values(closed_at=now, closed_reason="replaced")
            )
            challenge = OtpChallenge(
                identity_id=identity_id,
                code_hmac=f"{salt}${self._mac(salt, code)}",
                sent_to=sent_to,
                created_at=now,
                expires_at=now + LIFETIME,
            )
            session.add(challenge)
            await session.flush()
            return challenge.id, code

    async def cancel(self, challenge_id: int) -> None:
        """The code could not be sent: it must not stay usable (nor count against the resend throttle)."""
        async with self.db.transaction() as session:
            challenge = await session.get(OtpChallenge, challenge_id)
            if challenge is not None:
                await session.delete(challenge)

    async def check(self, identity_id: int, typed: str, *, sent_to: str | None = None) -> OtpCheck:
        """Compare a typed code with the identity's open challenge. Every outcome is decided by a conditional
        update, so two submissions at once can't both use a code or skip an attempt. With `sent_to`, a code
        that went to another (earlier) forwarding address does not count."""
        code = re.sub(r"\s+", "", typed or "")
        now = self.clock()
        async with self.db.transaction() as session:
            challenge = await session.scalar(
                select(OtpChallenge)
                .where(OtpChallenge.identity_id == identity_id)
                .order_by(OtpChallenge.created_at.desc(), OtpChallenge.id.desc())
                .limit(1)
                .with_for_update()
            )
            if challenge is None:
                return OtpCheck(False, "No code has been sent yet. Click “Send Test Response Email” first.")
            if challenge.closed_at is not None:
                reason = {
                    "used": "This code was already used.",
                    "locked": "This code is locked after 5 wrong tries.",
                    "expired": "This code has expired.",
                    "replaced": "A newer code was sent; use that one.",
                    "reset": "The response forwarding address changed since this code was sent.",
                }.get(challenge.closed_reason or "", "This code no longer works.")
                return OtpCheck(
                    False,
                    f"{reason} Click “Send Test Response Email” for a new one.",
                    locked=challenge.closed_reason == "locked",
                )
            if sent_to is not None and challenge.sent_to.lower() != sent_to.lower():
                return OtpCheck(
                    False,
                    "This code was sent to an earlier forwarding address. "
                    "Click “Send Test Response Email” for a new one.",
                )
            if now >= challenge.expires_at:
                await session.execute(
                    update(OtpChallenge)
                    .where(OtpChallenge.id == challenge.id, OtpChallenge.closed_at.is_(None))
                    .values(closed_at=now, closed_reason="expired")
                )
                return OtpCheck(
                    False,
                    "This code has expired (codes are valid for 10 minutes). "
                    "Click “Send Test Response Email” for a new one.",
                )
            if not re.fullmatch(r"[0-9]{6}", code):
                left = MAX_WRONG - challenge.failed_attempts
                return OtpCheck(False, "The code is the 6 digits from the email.", attempts_left=left)
            salt, _, expected = challenge.code_hmac.partition("$")
            if hmac.compare_digest(expected, self._mac(salt, code)):
                used = await session.execute(
                    update(OtpChallenge)
                    .where(OtpChallenge.id == challenge.id, OtpChallenge.closed_at.is_(None))
                    .values(closed_at=now, closed_reason="used")
                )
                if used.rowcount == 1:  # type: ignore[attr-defined]
                    return OtpCheck(True, "Receiving Verified")
                return OtpCheck(False, "This code was already used.")
            wrong = challenge.failed_attempts + 1
            locked = wrong >= MAX_WRONG
            values: dict[str, object] = {"failed_attempts": OtpChallenge.failed_attempts + 1}
            if locked:
                values.update(closed_at=now, closed_reason="locked")
            await session.execute(
                update(OtpChallenge)
                .where(OtpChallenge.id == challenge.id, OtpChallenge.closed_at.is_(None))
                .values(**values)
            )
            if locked:
                return OtpCheck(
                    False,
                    "That code is wrong, and the code is now locked after 5 wrong tries. "
                    "Click “Send Test Response Email” for a new one.",
                    locked=True,
                )
            left = MAX_WRONG - wrong
            return OtpCheck(
                False, f"That code is wrong. {left} attempt{'s' if left != 1 else ''} left.", attempts_left=left
            )
