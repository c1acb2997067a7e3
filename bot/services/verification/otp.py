"""One-time passwords for the Receiving step.

Each code comes from a fresh random secret (pyotp.HOTP over pyotp.random_base32()), so a code says nothing about
the next. The secret is thrown away; only a keyed HMAC of the code is stored. Codes are single use, expire after
LIFETIME, lock after MAX_WRONG wrong tries, and a new code replaces the old one (resending is throttled).

Guessing can't be farmed: at most CODES_PER_DAY codes per identity in any 24 hours, and LOCKS_IN_A_ROW codes locked
in a row (no correct code between them) lock the step for RECEIVING_LOCK from the last lock — and again after each
further lock until a code is entered correctly. That bounds a guesser at 50 tries a day for a million codes.
Outcomes are reported as values (`CodeProblem`, the exceptions' times), never as sentences: the Slack views word
them."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import pyotp
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.secrets import SecretBox
from models import Database, Identity, OtpChallenge, OtpCloseReason
from models.base import utcnow

LIFETIME = timedelta(minutes=10)
MAX_WRONG = 5
RESEND_AFTER = timedelta(seconds=60)
CODE_DIGITS = 6
CODES_PER_DAY = 10
CODES_WINDOW = timedelta(hours=24)
LOCKS_IN_A_ROW = 3
RECEIVING_LOCK = timedelta(hours=1)


class DailyCodeLimit(Exception):
    """CODES_PER_DAY codes were sent in the last CODES_WINDOW; the next one can go at `next_at`."""

    def __init__(self, next_at: datetime) -> None:
        super().__init__(f"{CODES_PER_DAY} codes sent in the last 24 hours")
        self.next_at = next_at


class ReceivingLocked(Exception):
    """LOCKS_IN_A_ROW codes in a row were locked: no code can be sent or entered before `until`."""

    def __init__(self, until: datetime) -> None:
        super().__init__(f"{LOCKS_IN_A_ROW} codes in a row were locked")
        self.until = until


class ResendTooSoon(Exception):
    def __init__(self, wait: timedelta) -> None:
        super().__init__(f"a code was sent {int((RESEND_AFTER - wait).total_seconds())} s ago")
        self.wait = wait

    @property
    def seconds(self) -> int:
        return max(1, int(self.wait.total_seconds()) + 1)


class CodeProblem(StrEnum):
    """Why a typed code did not verify. The first five are the reasons a code was closed (OtpCloseReason)."""

    USED = OtpCloseReason.USED.value
    LOCKED = OtpCloseReason.LOCKED.value  # this try locked it, or it was locked before
    EXPIRED = OtpCloseReason.EXPIRED.value
    REPLACED = OtpCloseReason.REPLACED.value
    RESET = OtpCloseReason.RESET.value  # the forwarding address changed after it was sent
    NONE_SENT = "none_sent"
    OLD_ADDRESS = "old_address"  # sent to an earlier forwarding address
    MALFORMED = "malformed"  # not CODE_DIGITS digits
    WRONG = "wrong"
    EARLIER_CHECK = "earlier_check"  # right code, but the step was reset meanwhile


@dataclass(frozen=True)
class OtpCheck:
    ok: bool
    problem: CodeProblem | None = None
    attempts_left: int = 0
    locked_until: datetime | None = None  # with LOCKED: the whole step is locked until then

    @property
    def locked(self) -> bool:
        return self.problem == CodeProblem.LOCKED


class OtpChallenges:
    def __init__(self, db: Database, secrets: SecretBox, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.secrets = secrets
        self.clock = clock

    def _mac(self, challenge_salt: str, code: str) -> str:
        return self.secrets.mac("otp", challenge_salt, code)

    @staticmethod
    async def locked_until(session: AsyncSession, identity_id: int, now: datetime) -> datetime | None:
        """When the Receiving step unlocks, if it is locked: the last LOCKS_IN_A_ROW codes that were decided (used or
        locked) were all locked, the newest less than RECEIVING_LOCK ago. A correct code ends the row."""
        decided = (
            await session.execute(
                select(OtpChallenge.closed_reason, OtpChallenge.closed_at)
                .where(
                    OtpChallenge.identity_id == identity_id,
                    OtpChallenge.closed_reason.in_([OtpCloseReason.LOCKED, OtpCloseReason.USED]),
                )
                .order_by(OtpChallenge.closed_at.desc(), OtpChallenge.id.desc())
                .limit(LOCKS_IN_A_ROW)
            )
        ).all()
        if len(decided) < LOCKS_IN_A_ROW or any(reason != OtpCloseReason.LOCKED for reason, _ in decided):
            return None
        last_lock: datetime | None = decided[0][1]
        until = last_lock + RECEIVING_LOCK if last_lock is not None else None
        return until if until is not None and until > now else None

    async def issue(self, identity_id: int, sent_to: str) -> tuple[int, str]:
        """A new code for the identity (the previous one stops working). Returns (challenge id, code).
        Raises ReceivingLocked, DailyCodeLimit or ResendTooSoon (checked in that order, under the identity's row
        lock so processes asking at once can't exceed the limits together)."""
        now = self.clock()
        code = pyotp.HOTP(pyotp.random_base32(), digits=CODE_DIGITS).at(0)
        salt = pyotp.random_base32()
        async with self.db.transaction() as session:
            await session.scalar(select(Identity.id).where(Identity.id == identity_id).with_for_update())
            until = await self.locked_until(session, identity_id, now)
            if until is not None:
                raise ReceivingLocked(until)
            recent = list(
                await session.scalars(
                    select(OtpChallenge.created_at)
                    .where(OtpChallenge.identity_id == identity_id, OtpChallenge.created_at > now - CODES_WINDOW)
                    .order_by(OtpChallenge.created_at.desc())
                    .limit(CODES_PER_DAY)
                )
            )
            if len(recent) >= CODES_PER_DAY:
                raise DailyCodeLimit(recent[-1] + CODES_WINDOW)
            if recent and now - recent[0] < RESEND_AFTER:
                raise ResendTooSoon(RESEND_AFTER - (now - recent[0]))
            await session.execute(
                update(OtpChallenge)
                .where(OtpChallenge.identity_id == identity_id, OtpChallenge.closed_at.is_(None))
                .values(closed_at=now, closed_reason=OtpCloseReason.REPLACED)
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
                return OtpCheck(False, CodeProblem.NONE_SENT)
            if challenge.closed_at is not None:
                reason = challenge.closed_reason
                if reason == OtpCloseReason.LOCKED:
                    until = await self.locked_until(session, identity_id, now)
                    return OtpCheck(False, CodeProblem.LOCKED, locked_until=until)
                return OtpCheck(False, CodeProblem(reason) if reason else CodeProblem.EXPIRED)
            if sent_to is not None and challenge.sent_to.lower() != sent_to.lower():
                return OtpCheck(False, CodeProblem.OLD_ADDRESS)
            if now >= challenge.expires_at:
                await self._close(session, challenge.id, now, OtpCloseReason.EXPIRED)
                return OtpCheck(False, CodeProblem.EXPIRED)
            if not re.fullmatch(f"[0-9]{{{CODE_DIGITS}}}", code):
                return OtpCheck(False, CodeProblem.MALFORMED, attempts_left=MAX_WRONG - challenge.failed_attempts)
            salt, _, expected = challenge.code_hmac.partition("$")
            if hmac.compare_digest(expected, self._mac(salt, code)):
                if await self._close(session, challenge.id, now, OtpCloseReason.USED):
                    return OtpCheck(True)
                return OtpCheck(False, CodeProblem.USED)
            wrong = challenge.failed_attempts + 1
            locked = wrong >= MAX_WRONG
            values: dict[str, object] = {"failed_attempts": OtpChallenge.failed_attempts + 1}
            if locked:
                values.update(closed_at=now, closed_reason=OtpCloseReason.LOCKED)
            await session.execute(
                update(OtpChallenge)
                .where(OtpChallenge.id == challenge.id, OtpChallenge.closed_at.is_(None))
                .values(**values)
            )
            if locked:
                await session.flush()
                until = await self.locked_until(session, identity_id, now)
                return OtpCheck(False, CodeProblem.LOCKED, locked_until=until)
            return OtpCheck(False, CodeProblem.WRONG, attempts_left=MAX_WRONG - wrong)

    @staticmethod
    async def _close(session: AsyncSession, challenge_id: int, now: datetime, reason: OtpCloseReason) -> bool:
        closed = await session.execute(
            update(OtpChallenge)
            .where(OtpChallenge.id == challenge_id, OtpChallenge.closed_at.is_(None))
            .values(closed_at=now, closed_reason=reason)
        )
        return bool(closed.rowcount == 1)  # type: ignore[attr-defined]
