"""SMTP AUTH credentials for the submission gateway, one or more per identity.

Only a salted scrypt hash of each password is stored ("scrypt$n$r$p$salt$hash", base64 parts), so a copy of the
database gives nobody the right to send. The password is shown once, when issued, and never logged or audited.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bot.services import audit
from bot.services.errors import NotFound
from models import Database, GatewayCredential, Identity
from models.base import utcnow

# scrypt cost: n=2^14, r=8 (16 MiB, ~35 ms on this kind of machine) is the usual interactive-login setting. It is
# paid once per SMTP connection, not per message.
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


@functools.cache
def _dummy_hash() -> str:
    """Checked when the username is unknown or revoked, so the answer takes as long as for a real user."""
    return hash_password(secrets.token_urlsafe(24))


class GatewayCredentials:
    """Issues and checks gateway credentials."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def issue(self, address: str, *, actor: str = "cli") -> IssuedCredential:
        """Issue a new credential for the identity with this address (case-insensitive). Earlier credentials of the
        identity stay valid until revoked. Raises NotFound for an unknown address."""
        wanted = address.strip().lower()
        password = secrets.token_urlsafe(24)
        password_hash = await asyncio.to_thread(hash_password, password)
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
                            identity_id=identity.id, username=username, password_hash=password_hash, created_by=actor
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

        scrypt runs in a worker thread so the event loop keeps serving other sessions meanwhile; unknown and
        revoked users are checked against a dummy hash so timing does not tell which usernames exist."""
        async with self.db.session() as session:
            row = (
                await session.execute(
                    select(
                        GatewayCredential.identity_id, GatewayCredential.password_hash, GatewayCredential.revoked_at
                    ).where(GatewayCredential.username == username)
                )
            ).one_or_none()
        if row is None or row.revoked_at is not None:
            await asyncio.to_thread(verify_password, password, _dummy_hash())
            return None
        if not await asyncio.to_thread(verify_password, password, row.password_hash):
            return None
        return int(row.identity_id)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, *, dklen: int = _KEY_BYTES) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=dklen)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
