"""Secrets at rest: SMTP passwords are Fernet-encrypted with keys kept outside the database.

Keys come from SECRET_KEYS (comma-separated, the first encrypts) or from a key file generated in DATA_DIR with
mode 0600. MultiFernet decrypts with any listed key, so a new key can be put first and `rotate` re-encrypts.

One key for one database: the database records a fingerprint of the key its secrets are under (a keyed value that
reveals nothing about the key). A process starts only when its FIRST key has that fingerprint — every running
process then encrypts passwords and keys one-time-password HMACs the same way. A recorded fingerprint that belongs
to a later key means a rotation was begun but not finished: `identity-bot secrets rotate` re-encrypts under the
first key and records its fingerprint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets as random
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import audit
from models import Database, Identity, KeyFingerprint, MailboxGrant
from models.base import utcnow
from models.db import dialect_insert

KEY_FILE_NAME = "secret.key"
FINGERPRINT_LABEL = b"identity-bot: which key this database is under"


class SecretsUnavailable(Exception):
    """A stored secret can't be decrypted with the configured keys (wrong or missing key)."""


class KeyMismatch(Exception):
    """The configured keys are not this database's key; str() says what to do (for the operator, exit 2)."""


def load_or_create_keys(keys: tuple[str, ...] | None, data_dir: Path) -> list[str]:
    """The configured keys, or the key file in data_dir (created on first start, mode 0600).

    Several processes may start at once: the key is written to a private temporary file and linked into place,
    which fails if a key file appeared meanwhile — the loser then reads the winner's key. A key file is never
    seen half-written."""
    if keys:
        for k in keys:
            Fernet(k.encode())  # raises ValueError on a malformed key
        return list(keys)
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = data_dir / f".{KEY_FILE_NAME}.{os.getpid()}.{random.token_hex(4)}"
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(Fernet.generate_key().decode() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)  # atomic and exclusive: FileExistsError when another process won
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    found = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not found:
        raise ValueError(f"the key file {path} is empty")
    for k in found:
        Fernet(k.encode())
    return found


def key_fingerprint(key: str) -> str:
    """What the database records of a key: HMAC-SHA256 of a fixed label under a key derived (HKDF) from it. It can
    only be compared, never turned back into the key; it is not a value the bot uses for anything else."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"identity-bot key fingerprint v1").derive(
        base64.urlsafe_b64decode(key.encode())
    )
    return "v1:" + hmac.new(derived, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("no secret keys")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        self.fingerprints = [key_fingerprint(k) for k in keys]
        # A separate key for fingerprints and OTP HMACs, derived so it never equals an encryption key.
        self._mac_keys = [hashlib.sha256(b"identity-bot-mac:" + k.encode()).digest() for k in keys]
        self._mac_key = self._mac_keys[0]

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretsUnavailable("A stored password can't be decrypted with the configured SECRET_KEYS.") from None

    def rotate(self, token: str) -> str:
        """Re-encrypt under the first key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretsUnavailable("A stored password can't be decrypted with the configured SECRET_KEYS.") from None

    def mac(self, *parts: str) -> str:
        """A keyed HMAC of the parts: safe to store or to round-trip through Slack, reveals nothing."""
        msg = "\x1f".join(parts).encode()
        return hmac.new(self._mac_key, msg, hashlib.sha256).hexdigest()

    def macs(self, *parts: str) -> list[str]:
        """`mac(*parts)` under every configured key, the first key's first: to recognise a value keyed before a
        rotation (and re-key it)."""
        msg = "\x1f".join(parts).encode()
        return [hmac.new(key, msg, hashlib.sha256).hexdigest() for key in self._mac_keys]


NOT_THIS_DATABASE = (
    "none of these keys is the key this database's passwords and codes are under (its key fingerprint differs). "
    "Every process that shares the database needs the same SECRET_KEYS: copy the value (or the key file "
    "DATA_DIR/secret.key) from the host that first used this database, then start again."
)


async def check_key(db: Database, box: SecretBox) -> None:
    """At start: the first key must be the database's key. A database without a fingerprint yet (new, or from
    before fingerprints) records the first key's, provided the keys decrypt every password already stored.
    Raises KeyMismatch saying what to do; two processes starting at once record one fingerprint."""
    async with db.transaction() as session:
        stored = await session.scalar(select(KeyFingerprint.fingerprint).where(KeyFingerprint.id == 1))
        if stored is None:
            await _require_readable(session, box)
            insert = dialect_insert(db)(KeyFingerprint).values(
                id=1, fingerprint=box.fingerprints[0], recorded_at=utcnow()
            )
            await session.execute(insert.on_conflict_do_nothing(index_elements=["id"]))
            stored = await session.scalar(select(KeyFingerprint.fingerprint).where(KeyFingerprint.id == 1))
    if stored == box.fingerprints[0]:
        return
    if stored in box.fingerprints:
        position = box.fingerprints.index(stored) + 1
        raise KeyMismatch(
            f"this database is still under key number {position} of SECRET_KEYS, not the first: a rotation was "
            "begun and not finished. Run `identity-bot secrets rotate` (it re-encrypts the stored passwords under "
            "the first key), then start again, and restart every other process that shares the database."
        )
    raise KeyMismatch(NOT_THIS_DATABASE)


async def _require_readable(session: AsyncSession, box: SecretBox) -> None:
    tokens = list(
        await session.scalars(
            select(Identity.smtp_password_encrypted).where(Identity.smtp_password_encrypted.is_not(None))
        )
    ) + list(await session.scalars(select(MailboxGrant.refresh_token_encrypted)))
    for token in tokens:
        try:
            box.decrypt(str(token))
        except SecretsUnavailable:
            raise KeyMismatch(
                "the SMTP passwords stored in this database can't be decrypted with these keys. Use the "
                "SECRET_KEYS (or key file) the database was used with; every process that shares it needs the same."
            ) from None


async def rotate_stored_passwords(db: Database, box: SecretBox, *, actor: str = "cli") -> int:
    """`identity-bot secrets rotate`: re-encrypt every stored SMTP password and sign-in token under the first key
    and record that key's fingerprint, in one transaction. Refuses (KeyMismatch) keys that don't include the
    database's key. Returns how many identities and sign-ins were re-encrypted."""
    count = 0
    async with db.transaction() as session:
        row = await session.get(KeyFingerprint, 1, with_for_update=True)
        if row is not None and row.fingerprint not in box.fingerprints:
            raise KeyMismatch(NOT_THIS_DATABASE)
        # Locked: an edit or a token renewal committed meanwhile must not be overwritten with the old value.
        rows = await session.scalars(
            select(Identity).where(Identity.smtp_password_encrypted.is_not(None)).with_for_update()
        )
        for identity in rows.all():
            try:
                identity.smtp_password_encrypted = box.rotate(str(identity.smtp_password_encrypted))
            except SecretsUnavailable:
                raise KeyMismatch(NOT_THIS_DATABASE) from None
            count += 1
        # "Sign in with Microsoft / Google": the same keys encrypt the mailbox's tokens.
        for grant in (await session.scalars(select(MailboxGrant).with_for_update())).all():
            try:
                grant.refresh_token_encrypted = box.rotate(grant.refresh_token_encrypted)
                if grant.access_token_encrypted:
                    grant.access_token_encrypted = box.rotate(grant.access_token_encrypted)
            except SecretsUnavailable:
                raise KeyMismatch(NOT_THIS_DATABASE) from None
            count += 1
        if row is None:
            session.add(KeyFingerprint(id=1, fingerprint=box.fingerprints[0], recorded_at=utcnow()))
        else:
            row.fingerprint, row.recorded_at = box.fingerprints[0], utcnow()
        audit.record(session, actor=actor, action="secrets.rotated", identity_id=None, count=count)
    return count
