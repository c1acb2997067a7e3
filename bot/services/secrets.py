"""Secrets at rest: SMTP passwords are Fernet-encrypted with keys kept outside the database.

Keys come from SECRET_KEYS (comma-separated, the first encrypts) or from a key file generated in DATA_DIR with
mode 0600. MultiFernet decrypts with any listed key, so a new key can be put first and `rotate` re-encrypts."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select

from bot.services import audit
from models import Database, Identity

KEY_FILE_NAME = "secret.key"


class SecretsUnavailable(Exception):
    """A stored secret can't be decrypted with the configured keys (wrong or missing key)."""


def load_or_create_keys(keys: tuple[str, ...] | None, data_dir: Path) -> list[str]:
    """The configured keys, or the key file in data_dir (created on first start, mode 0600)."""
    if keys:
        for k in keys:
            Fernet(k.encode())  # raises ValueError on a malformed key
        return list(keys)
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(Fernet.generate_key().decode() + "\n")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("no secret keys")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
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


async def rotate_stored_passwords(db: Database, box: SecretBox, *, actor: str = "cli") -> int:
    """`identity-bot secrets rotate`: re-encrypt every stored SMTP password under the first key. Returns how many."""
    count = 0
    async with db.transaction() as session:
        rows = await session.scalars(select(Identity).where(Identity.smtp_password_encrypted.is_not(None)))
        for identity in rows.all():
            identity.smtp_password_encrypted = box.rotate(str(identity.smtp_password_encrypted))
            count += 1
        audit.record(session, actor=actor, action="secrets.rotated", identity_id=None, count=count)
    return count
