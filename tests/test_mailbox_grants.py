"""A signed-in mailbox's tokens over time, below the Slack flow: renewed once across processes (two processes'
worth of services on one database), rotation kept, a revoked grant remembered; the client kit's refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, update

from bot.mail import oauth
from bot.mail.id_token import signed_in_mailbox
from bot.mail.oauth import GrantRevoked, OAuthHttp, ProviderUnreachable, ScopeNotGranted, Tokens
from bot.sandbox.oauth_server import FakeAuthorizationServer
from bot.services.identities.grants import MailboxGrants
from bot.services.secrets import SecretBox
from models import Database, MailboxGrant
from models.base import utcnow

REDIRECT = "http://127.0.0.1:9/oauth/callback"  # registered, never opened: these tests stop at the code
MAILBOX = "carol@contoso.example.com"


@pytest.fixture(params=["microsoft", "google"])
async def auth(request: pytest.FixtureRequest) -> AsyncIterator[FakeAuthorizationServer]:
    server = FakeAuthorizationServer(style=request.param, rotate_refresh_tokens=request.param == "microsoft")
    await server.start()
    server.redirect_uris.add(REDIRECT)
    server.sign_in_as(MAILBOX)
    yield server
    await server.close()


def provider_of(auth: FakeAuthorizationServer) -> oauth.OAuthProvider:
    env = auth.env()
    build = oauth.microsoft if auth.style == "microsoft" else oauth.google
    p = auth.style.upper()
    return build(
        env[f"{p}_CLIENT_ID"],
        env[f"{p}_CLIENT_SECRET"],
        authorize_url=env[f"{p}_AUTHORIZE_URL"],
        token_url=env[f"{p}_TOKEN_URL"],
        jwks_url=env[f"{p}_JWKS_URL"],
    )


async def signed_in(auth: FakeAuthorizationServer, http: aiohttp.ClientSession) -> Tokens:
    """The browser part done by hand: authorize, take the code, exchange it with the verifier."""
    provider = provider_of(auth)
    verifier = oauth.new_code_verifier()
    url = oauth.authorization_url(provider, REDIRECT, "some-state", verifier)
    async with http.get(url, allow_redirects=False) as resp:
        assert resp.status == 302
        location = resp.headers["Location"]
    code = dict(p.split("=", 1) for p in location.split("?", 1)[1].split("&"))["code"]
    tokens, id_token = await oauth.exchange_code(http, provider, code, verifier, REDIRECT)
    return await signed_in_mailbox(http, provider, tokens, id_token)


async def test_two_processes_renew_an_expired_token_once(auth: FakeAuthorizationServer, database_url: str) -> None:
    box = SecretBox([Fernet.generate_key().decode()])
    providers = {auth.style: provider_of(auth)}
    dbs = [Database(database_url), Database(database_url)]
    https = [OAuthHttp(), OAuthHttp()]
    waiting = asyncio.Event()

    async def pause_b(seconds: float) -> None:  # process B found the renewal taken: it waits for A's token
        waiting.set()
        await asyncio.sleep(seconds)

    try:
        await dbs[0].upgrade()
        a = MailboxGrants(dbs[0], box, providers, https[0])
        b = MailboxGrants(dbs[1], box, providers, https[1], pause=pause_b)
        tokens = await signed_in(auth, https[0].session())
        assert tokens.address == MAILBOX and tokens.id_token_verified
        grant = await a.store_for_form(auth.style, tokens, slack_user_id="U1", view_id="V1")
        async with dbs[0].transaction() as session:
            await session.execute(update(MailboxGrant).values(access_expires_at=utcnow() - timedelta(minutes=1)))

        release = auth.hold_refreshes()
        first = asyncio.create_task(a.access_token(grant.id))
        await asyncio.wait_for(auth.refresh_arrived.wait(), 10)
        second = asyncio.create_task(b.access_token(grant.id))
        await asyncio.wait_for(waiting.wait(), 10)
        release.set()
        token_a, token_b = await asyncio.wait_for(asyncio.gather(first, second), 20)

        assert token_a == token_b != tokens.access_token
        assert len(auth.refresh_requests()) == 1, "renewed once"
        assert auth.mailbox_for_access_token(token_a) == MAILBOX
        async with dbs[1].session() as session:
            stored = await session.scalar(select(MailboxGrant))
        assert stored is not None and stored.refreshing_until is None
        assert stored.access_expires_at is not None and stored.access_expires_at > utcnow() + timedelta(minutes=30)
        refresh_token = box.decrypt(stored.refresh_token_encrypted)
        if auth.style == "microsoft":  # rotated: the new one is stored (the old one no longer works there)
            assert refresh_token != tokens.refresh_token
        else:  # Google sends none on refresh: the old one is kept
            assert refresh_token == tokens.refresh_token
        assert tokens.access_token not in str(stored.__dict__) and refresh_token not in str(stored.__dict__)

        # Revoked at the provider: the renewal says so, the grant remembers it, and no more requests are made.
        auth.revoke(MAILBOX, access_tokens_too=True)
        with pytest.raises(GrantRevoked):
            await b.access_token(grant.id, rejected=token_a)
        requests = len(auth.token_requests)
        with pytest.raises(GrantRevoked):
            await a.access_token(grant.id)
        assert len(auth.token_requests) == requests
    finally:
        for http in https:
            await http.close()
        for db in dbs:
            await db.dispose()


@pytest.mark.parametrize("auth", ["google"], indirect=True)
async def test_the_client_kit_refuses_what_it_cannot_use(auth: FakeAuthorizationServer) -> None:
    async with aiohttp.ClientSession() as http:
        provider = provider_of(auth)
        with pytest.raises(ValueError):  # Authlib would silently drop an empty verifier
            await oauth.exchange_code(http, provider, "code", "", REDIRECT)
        auth.withheld_scopes.add("https://mail.google.com/")
        with pytest.raises(ScopeNotGranted):
            await signed_in(auth, http)
        auth.withheld_scopes.clear()
        tokens = await signed_in(auth, http)
        auth.break_token_endpoint(503)
        with pytest.raises(ProviderUnreachable):
            await oauth.refresh(http, provider, tokens.refresh_token or "")
        await auth.close()
        with pytest.raises(ProviderUnreachable):
            await oauth.refresh(http, provider, tokens.refresh_token or "")
