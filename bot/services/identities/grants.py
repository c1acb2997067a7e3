"""A company identity's "Sign in with Microsoft / Google": storing its tokens and keeping the access token fresh.

Both tokens are Fernet-encrypted with SECRET_KEYS, like SMTP passwords (same key, same rotation). The access token
is renewed a few minutes before it expires, by one process at a time: a conditional UPDATE takes a short lease on
the grant row (it holds no database lock while the provider answers), the others wait for the token it stores.
Microsoft rotates refresh tokens, so the new one is stored with the new access token. When the provider says the
grant is gone (``invalid_grant``) the row is marked revoked: the identity needs "sign in again"."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mail.oauth import TOKEN_TIMEOUT, GrantRevoked, OAuthHttp, OAuthProvider, Tokens, refresh
from bot.mail.xoauth2 import Bearer
from bot.services.secrets import SecretBox
from models import Database, MailboxGrant, MailboxProvider
from models.base import utcnow

log = logging.getLogger(__name__)

RENEW_BEFORE = timedelta(minutes=5)
"""An access token with less life than this left is renewed before use."""
LEASE = timedelta(seconds=TOKEN_TIMEOUT * 2)
"""How long one process may take to renew before another may try."""
WAIT_STEP = 0.2
"""Seconds between looks at a grant another process is renewing."""


class MailboxGrants:
    def __init__(
        self,
        db: Database,
        secrets: SecretBox,
        providers: Mapping[str, OAuthProvider],
        http: OAuthHttp,
        *,
        clock: Callable[[], datetime] = utcnow,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.db = db
        self.secrets = secrets
        self.providers = providers
        self.http = http
        self.clock = clock
        self.pause = pause

    def provider(self, grant: MailboxGrant) -> OAuthProvider | None:
        return self.providers.get(grant.provider)

    # ---- storing -------------------------------------------------------------------------------------------
    async def store_for_form(self, provider: str, tokens: Tokens, *, slack_user_id: str, view_id: str) -> MailboxGrant:
        """A new sign-in made in an open modal; it replaces an earlier one of the same modal."""
        assert tokens.address and tokens.refresh_token
        now = self.clock()
        grant = MailboxGrant(
            signed_in_by=slack_user_id,
            view_id=view_id,
            provider=MailboxProvider(provider),
            mailbox=tokens.address,
            refresh_token_encrypted=self.secrets.encrypt(tokens.refresh_token),
            access_token_encrypted=self.secrets.encrypt(tokens.access_token),
            access_expires_at=_at(tokens.expires_at),
            created_at=now,
            updated_at=now,
        )
        async with self.db.transaction() as session:
            await session.execute(_drafts(delete(MailboxGrant), slack_user_id, view_id))
            session.add(grant)
        return grant

    async def for_form(self, slack_user_id: str, view_id: str) -> MailboxGrant | None:
        """The sign-in made in this modal by this Slack user, if any (never someone else's)."""
        async with self.db.session() as session:
            query = _drafts(select(MailboxGrant), slack_user_id, view_id).order_by(MailboxGrant.id.desc()).limit(1)
            return await session.scalar(query)

    async def for_identity(self, identity_id: int) -> MailboxGrant | None:
        async with self.db.session() as session:
            return await session.scalar(select(MailboxGrant).where(MailboxGrant.identity_id == identity_id))

    async def forget_form(self, slack_user_id: str, view_id: str) -> None:
        """ "Use a password instead": the modal's sign-in is dropped."""
        async with self.db.transaction() as session:
            await session.execute(_drafts(delete(MailboxGrant), slack_user_id, view_id))

    @staticmethod
    async def attach(session: AsyncSession, grant_id: int, identity_id: int) -> bool:
        """In the caller's transaction: the modal's grant becomes the identity's (replacing an earlier one)."""
        await session.execute(
            delete(MailboxGrant).where(MailboxGrant.identity_id == identity_id, MailboxGrant.id != grant_id)
        )
        attached = await session.execute(
            update(MailboxGrant)
            .where(MailboxGrant.id == grant_id)
            .values(identity_id=identity_id, view_id=None, updated_at=utcnow())
        )
        return attached.rowcount == 1  # type: ignore[attr-defined]

    @staticmethod
    async def detach(session: AsyncSession, identity_id: int) -> None:
        """In the caller's transaction: the identity goes back to a password; its grant is deleted."""
        await session.execute(delete(MailboxGrant).where(MailboxGrant.identity_id == identity_id))

    async def purge_unattached(self, older_than: timedelta) -> int:
        """Sign-ins of modals that were never saved."""
        async with self.db.transaction() as session:
            result = await session.execute(
                delete(MailboxGrant).where(
                    MailboxGrant.identity_id.is_(None), MailboxGrant.created_at < self.clock() - older_than
                )
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # ---- using -------------------------------------------------------------------------------------------------
    def bearer(self, grant: MailboxGrant) -> Bearer:
        """What an SmtpServer logs in with: XOAUTH2 and this grant's access token, renewed as needed."""
        provider = self.providers.get(grant.provider)
        label = provider.label if provider else str(grant.provider).title()
        return Bearer(grant.provider, label, _GrantTokens(self, grant.id))

    async def access_token(self, grant_id: int, *, rejected: str | None = None) -> str:
        """A current access token; renewed (once across processes) when it expires within RENEW_BEFORE or the
        server just refused it (`rejected`). Raises GrantRevoked (sign in again), ProviderUnreachable, ..."""
        deadline = self.clock() + LEASE + timedelta(seconds=TOKEN_TIMEOUT)
        while True:
            grant = await self._load(grant_id)
            token = self.secrets.decrypt(grant.access_token_encrypted) if grant.access_token_encrypted else None
            now = self.clock()
            if grant.revoked_at is not None:
                raise GrantRevoked("invalid_grant", "the grant was revoked earlier", 400)
            expires = grant.access_expires_at
            if token and token != rejected and expires is not None and expires - now > RENEW_BEFORE:
                return token
            lease = await self._take_lease(grant, now)
            if lease is not None:
                return await self._renew(grant, lease)
            if now > deadline:
                raise TimeoutError("another process did not finish renewing the access token")
            await self.pause(WAIT_STEP)  # another process is renewing it: its token will be stored

    async def _load(self, grant_id: int) -> MailboxGrant:
        async with self.db.session() as session:
            grant = await session.get(MailboxGrant, grant_id)
        if grant is None:
            raise GrantRevoked("invalid_grant", "the sign-in was removed", 400)
        return grant

    async def _take_lease(self, grant: MailboxGrant, now: datetime) -> datetime | None:
        """Claim the renewal if nobody holds it and nobody stored a newer token since `grant` was read."""
        lease = now + LEASE
        same_token = (
            MailboxGrant.access_token_encrypted.is_(None)
            if grant.access_token_encrypted is None
            else MailboxGrant.access_token_encrypted == grant.access_token_encrypted
        )
        async with self.db.transaction() as session:
            taken = await session.execute(
                update(MailboxGrant)
                .where(
                    MailboxGrant.id == grant.id,
                    same_token,
                    (MailboxGrant.refreshing_until.is_(None)) | (MailboxGrant.refreshing_until < now),
                )
                .values(refreshing_until=lease)
            )
        return lease if taken.rowcount == 1 else None  # type: ignore[attr-defined]

    async def _renew(self, grant: MailboxGrant, lease: datetime) -> str:
        provider = self.providers.get(grant.provider)
        mine = (MailboxGrant.id == grant.id, MailboxGrant.refreshing_until == lease)
        try:
            if provider is None:
                raise GrantRevoked("not_configured", f"sign-in with {grant.provider} is not configured", 0)
            tokens = await refresh(self.http.session(), provider, self.secrets.decrypt(grant.refresh_token_encrypted))
        except GrantRevoked:
            log.info("grant %s of %s was revoked at the provider", grant.id, grant.provider)
            await self._finish(mine, refreshing_until=None, revoked_at=self.clock())
            raise
        except BaseException:
            await self._finish(mine, refreshing_until=None)
            raise
        assert tokens.refresh_token is not None
        await self._finish(
            mine,
            access_token_encrypted=self.secrets.encrypt(tokens.access_token),
            refresh_token_encrypted=self.secrets.encrypt(tokens.refresh_token),  # Microsoft rotates it
            access_expires_at=_at(tokens.expires_at),
            refreshing_until=None,
        )
        log.info("renewed the access token of grant %s (%s)", grant.id, grant.provider)
        return tokens.access_token

    async def _finish(self, mine: tuple[object, ...], **values: object) -> None:
        async with self.db.transaction() as session:
            await session.execute(update(MailboxGrant).where(*mine).values(updated_at=self.clock(), **values))  # type: ignore[arg-type]


class _GrantTokens:
    """The TokenSource of one grant (bot/mail/xoauth2.py)."""

    def __init__(self, grants: MailboxGrants, grant_id: int) -> None:
        self.grants = grants
        self.grant_id = grant_id

    async def token(self) -> str:
        return await self.grants.access_token(self.grant_id)

    async def renew(self, rejected: str) -> str:
        return await self.grants.access_token(self.grant_id, rejected=rejected)


def _drafts(statement, slack_user_id: str, view_id: str):  # type: ignore[no-untyped-def]
    return statement.where(
        MailboxGrant.identity_id.is_(None), MailboxGrant.signed_in_by == slack_user_id, MailboxGrant.view_id == view_id
    )


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=utcnow().tzinfo)
