"""The maintenance commands of `identity-bot` (db upgrade, secrets rotate, credentials issue/revoke, dkim record):
the database and the services the composition root builds (bot/app/core.py build_core), without Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.app import Core, build_core, dkim_signer, key_problem, open_database, signing_key_error
from bot.config import ConfigError, Settings
from bot.mail.dkim import DkimKeyError
from bot.services.gateway import IssuedCredential
from bot.services.notifier import NullNotifier
from bot.services.secrets import KeyMismatch, rotate_stored_passwords
from models import Database


class _NoManagers:
    """Maintenance commands act as the operator, never as a Slack user: nobody is a manager there."""

    async def is_manager(self, user_id: str) -> bool:
        return False

    async def manager_ids(self) -> set[str]:
        return set()


@asynccontextmanager
async def offline(settings: Settings, *, migrate: bool = True) -> AsyncIterator[tuple[Database, Core]]:
    """The database (migrated) and the services, without Slack: for the CLI's maintenance commands."""
    db = open_database(settings)
    try:
        if migrate:
            await db.upgrade()
        yield db, build_core(settings, db, NullNotifier(), _NoManagers())
    finally:
        await db.dispose()


async def upgrade_database(settings: Settings) -> None:
    """`identity-bot db upgrade`: migrations only (no keys are created)."""
    db = open_database(settings)
    try:
        await db.upgrade()
    finally:
        await db.dispose()


async def rotate_secrets(settings: Settings) -> int:
    """`identity-bot secrets rotate`: re-encrypt every stored password under the first key, whose fingerprint the
    database then records. Raises ConfigError when the keys don't include the database's key."""
    async with offline(settings) as (db, core):
        try:
            return await rotate_stored_passwords(db, core.secrets)
        except KeyMismatch as exc:
            raise key_problem(settings, exc) from None


async def issue_credentials(settings: Settings, address: str) -> IssuedCredential:
    """`identity-bot credentials issue <address>`. Raises NotFound."""
    async with offline(settings) as (_db, core):
        return await core.services.credentials.issue(address, actor="cli")


async def revoke_credentials(settings: Settings, username: str) -> bool:
    """`identity-bot credentials revoke <username>`. Raises NotFound."""
    async with offline(settings) as (_db, core):
        return await core.services.credentials.revoke(username, actor="cli")


def dkim_record(settings: Settings) -> str:
    """`identity-bot dkim record`: the DNS records to publish for platform mail (DKIM key, SPF, DMARC), as one
    block. Creates the key in DATA_DIR if none is configured and none exists yet, so DNS can be published first."""
    relay = settings.relay.host if settings.relay is not None else None
    try:
        return dkim_signer(settings).record_block(relay)
    except DkimKeyError as exc:
        raise signing_key_error(exc, settings) from None
    except OSError as exc:
        raise ConfigError("DATA_DIR", f"can't create the DKIM key there ({exc.strerror})") from None
