"""SMTP AUTH credentials for the submission gateway, one or more per identity.

Only a keyed hash of each password is stored: "hmac-sha256$<hex>", HMAC-SHA-256 under a key derived from the first
of SECRET_KEYS (SecretBox.mac), over the username and the password. The passwords are 192-bit random values we
generate, so nothing slow is needed to make guessing hopeless: a slow hash (scrypt, bcrypt) protects passwords
people choose. A fast keyed one costs microseconds per AUTH, so a flood of wrong AUTHs burns no CPU, and a copy of
the database without the keys gives nobody the right to send. The password is shown once, when issued, and never
logged or audited.

Credentials issued before (salted scrypt, "scrypt$n$r$p$salt$hash") keep working: the first successful login checks
them with scrypt, one at a time, and stores the keyed hash in their place. Likewise a credential keyed under an
older secret key (still listed in SECRET_KEYS) is re-keyed under the first at its next login; one whose key was
dropped must be issued again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from bot.services import audit
from bot.services.errors import NotFound
from bot.services.secrets import SecretBox
from models import Database, GatewayCredential, Identity
from models.base import utcnow

log = logging.getLogger(__name__)

HMAC_SCHEME = "hmac-sha256"
_PURPOSE = "gateway-credential"
# How long, and for how many usernames, what was read about a credential may refuse a wrong AUTH without the database.
REFUSAL_CACHE_SECONDS = 60.0
REFUSAL_CACHE_SIZE = 10_000
# Legacy hashes: scrypt n=2^14, r=8 (16 MiB, ~35 ms).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAXMEM = 64 * 1024 * 1024
# Bounds on parameters read back from the database: a tampered row must not make us allocate gigabytes.
_MAX_N = 2**20


@dataclass(frozen=True)
class IssuedCredential:
    """What the operator hands to the mailer that submits through the gateway. The password exists only here."""

    username: str
    password: str = field(repr=False)


def hash_password(password: str) -> str:
    """A legacy scrypt hash (what credentials issued before the keyed hash hold)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password.encode(), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(key)))


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of a password against an encoded hash; False for anything malformed."""
    try:
        scheme, n_s, r_s, p_s, salt_s, key_s = encoded.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, expected = base64.b64decode(salt_s), base64.b64decode(key_s)
    except ValueError:
        return False
    if scheme != "scrypt" or not (2 <= n <= _MAX_N and 1 <= r <= 32 and 1 <= p <= 16) or not expected:
        return False
    try:
        key = _scrypt(password.encode(), salt, n, r, p, dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(key, expected)


class GatewayCredentials:
    """Issues and checks gateway credentials."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box
        # Legacy scrypt checks run one at a time: AUTHs against not-yet-upgraded credentials occupy one thread at most.
        self._legacy_checks = asyncio.Semaphore(1)
        # username -> (stored keyed hash, or None for no such / a revoked credential; when it was read)
        self._recent: dict[str, tuple[str | None, float]] = {}

    def _keyed_hash(self, username: str, password: str) -> str:
        return f"{HMAC_SCHEME}${self.box.mac(_PURPOSE, username, password)}"

    async def issue(self, address: str, *, actor: str = "cli") -> IssuedCredential:
        """Issue a new credential for the identity with this address (case-insensitive). Earlier credentials of the
        identity stay valid until revoked. Raises NotFound for an unknown address."""
        wanted = address.strip().lower()
        password = secrets.token_urlsafe(24)
        for _attempt in range(5):
            try:
                async with self.db.transaction() as session:
                    identity = (
                        await session.execute(select(Identity).where(func.lower(Identity.address) == wanted))
                    ).scalar_one_or_none()
                    if identity is None:
                        raise NotFound(f"No identity with the address {address.strip()}.")
                    local = identity.address.split("@", 1)[0].lower()[:100]
                    username = f"{local}-{secrets.token_hex(3)}"
                    session.add(
                        GatewayCredential(
                            identity_id=identity.id,
                            username=username,
                            password_hash=self._keyed_hash(username, password),
                            created_by=actor,
                        )
                    )
                    await session.flush()
                    audit.record(
                        session,
                        actor=actor,
                        action="gateway.credential_issued",
                        identity_id=identity.id,
                        username=username,
                    )
                return IssuedCredential(username=username, password=password)
            except IntegrityError:
                continue  # the random suffix collided with an existing username: draw another
        raise RuntimeError("could not find a free gateway username")

    async def active(self, identity_id: int) -> list[GatewayCredential]:
        """The identity's credentials that still work, newest first."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(GatewayCredential)
                .where(GatewayCredential.identity_id == identity_id, GatewayCredential.revoked_at.is_(None))
                .order_by(GatewayCredential.id.desc())
            )
            return list(rows.all())

    async def replace(self, identity_id: int, *, actor: str) -> tuple[IssuedCredential, list[str]]:
        """Issue a new credential for the identity and revoke every earlier one, in one transaction: the new
        credential and the usernames revoked. (From Slack: the person is shown one working credential.)"""
        password = secrets.token_urlsafe(24)
        for _attempt in range(5):
            try:
                async with self.db.transaction() as session:
                    identity = await session.get(Identity, identity_id, with_for_update=True)
                    if identity is None:
                        raise NotFound("This identity no longer exists.")
                    now = utcnow()
                    revoked = list(
                        (
                            await session.scalars(
                                update(GatewayCredential)
                                .where(
                                    GatewayCredential.identity_id == identity_id,
                                    GatewayCredential.revoked_at.is_(None),
                                )
                                .values(revoked_at=now)
                                .returning(GatewayCredential.username)
                            )
                        ).all()
                    )
                    username = f"{identity.address.split('@', 1)[0].lower()[:100]}-{secrets.token_hex(3)}"
                    session.add(
                        GatewayCredential(
                            identity_id=identity_id,
                            username=username,
                            password_hash=self._keyed_hash(username, password),
                            created_by=actor,
                            created_at=now,
                        )
                    )
                    await session.flush()
                    for old in revoked:
                        audit.record(
                            session, actor=actor, action="gateway.credential_revoked", identity_id=identity_id,
                            username=old, reason="replaced",
                        )  # fmt: skip
                    audit.record(
                        session, actor=actor, action="gateway.credential_issued", identity_id=identity_id,
                        username=username, replaced=revoked,
                    )  # fmt: skip
                for old in revoked:
                    self._recent.pop(old, None)
                return IssuedCredential(username=username, password=password), revoked
            except IntegrityError:
                continue  # the random suffix collided with an existing username: draw another
        raise RuntimeError("could not find a free gateway username")

    async def revoke(self, username: str, *, actor: str = "cli") -> bool:
        """Revoke a credential; True if it was active. Raises NotFound for an unknown username."""
        async with self.db.transaction() as session:
            credential = (
                await session.execute(select(GatewayCredential).where(GatewayCredential.username == username))
            ).scalar_one_or_none()
            if credential is None:
                raise NotFound(f"No gateway credential {username}.")
            if credential.revoked_at is not None:
                return False
            credential.revoked_at = utcnow()
            audit.record(
                session,
                actor=actor,
                action="gateway.credential_revoked",
                identity_id=credential.identity_id,
                username=username,
            )
            return True

    async def authenticate(self, username: str, password: str) -> int | None:
        """The identity id the credential belongs to, or None (unknown user, revoked, wrong password).

        The keyed hash takes microseconds. A wrong password for a username looked up in the last REFUSAL_CACHE_SECONDS
        is refused from memory (see `_refused_from_memory`); every acceptance reads the database, so a revocation
        counts at once. A legacy scrypt hash is checked in a worker thread, one at a time."""
        candidates = self.box.macs(_PURPOSE, username, password)
        if self._refused_from_memory(username, candidates):
            return None
        # Core on a plain connection rather than an ORM session: a fraction of the CPU, on a path anyone can call.
        async with self.db.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(
                        GatewayCredential.id,
                        GatewayCredential.identity_id,
                        GatewayCredential.password_hash,
                        GatewayCredential.revoked_at,
                    ).where(GatewayCredential.username == username)
                )
            ).one_or_none()
        if row is None or row.revoked_at is not None:
            self._remember(username, None)
            return None
        scheme, _, stored = str(row.password_hash).partition("$")
        if scheme == HMAC_SCHEME:
            self._remember(username, stored)
            matches = [i for i, mac in enumerate(candidates) if hmac.compare_digest(mac, stored)]
            if not matches:
                return None
            if matches[0] > 0:  # keyed under an older secret key: re-key under the first
                await self._store_hash(row.id, username, password)
            return int(row.identity_id)
        if scheme == "scrypt":
            async with self._legacy_checks:
                ok = await asyncio.to_thread(verify_password, password, str(row.password_hash))
            if not ok:
                return None
            await self._store_hash(row.id, username, password)
            log.info("gateway credential %s moved from scrypt to the keyed hash", username)
            return int(row.identity_id)
        return None

    def _refused_from_memory(self, username: str, candidates: list[str]) -> bool:
        """True when what this process read about `username` moments ago already proves the AUTH wrong: no such
        (or a revoked) credential, or a keyed hash none of the candidates matches. A stored keyed hash only ever
        changes to another hash of the same password (re-keying), so a mismatch is final; a match is never trusted
        from memory. A flood of wrong AUTHs then costs no database query."""
        known = self._recent.get(username)
        if known is None or time.monotonic() - known[1] > REFUSAL_CACHE_SECONDS:
            return False
        stored = known[0]
        return stored is None or not any(hmac.compare_digest(mac, stored) for mac in candidates)

    def _remember(self, username: str, stored: str | None) -> None:
        self._recent.pop(username, None)
        self._recent[username] = (stored, time.monotonic())
        while len(self._recent) > REFUSAL_CACHE_SIZE:
            self._recent.pop(next(iter(self._recent)))  # the oldest

    async def _store_hash(self, credential_id: int, username: str, password: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(GatewayCredential)
                .where(GatewayCredential.id == credential_id)
                .values(password_hash=self._keyed_hash(username, password))
            )


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, *, dklen: int = _KEY_BYTES) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=dklen)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
