"""OAuth 2.0 sign-in for customers' mailboxes (Microsoft 365, Google): the provider settings, the authorization URL
with PKCE, the code exchange and the token refresh.

Who does what (the protocol pieces are Authlib's, not ours):
- Authlib: the PKCE challenge (RFC 7636, S256), the authorization URL, the token request body, client
  authentication, ``expires_in`` -> ``expires_at``, and (in bot/mail/id_token.py) the OpenID Connect claim checks.
- joserfc (Authlib's JOSE backend): the id_token signature against the provider's keys (bot/mail/id_token.py).
- aiohttp, the bot's HTTP client already, carries the token request. Authlib's only async client is httpx-based;
  all we need from one is a single POST, mapped to the errors below.

Nothing here knows Settings: the composition root builds each `OAuthProvider` from them. Tokens never reach a log
line or an exception text (`Tokens` hides them in repr)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from authlib.common.security import generate_token
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749 import OAuth2Token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

log = logging.getLogger(__name__)

TOKEN_TIMEOUT = 15.0
"""Seconds one whole exchange with a token endpoint may take."""

MICROSOFT = "microsoft"
GOOGLE = "google"
MICROSOFT_AUTHORIZE_URL = "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize"
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
MICROSOFT_JWKS_URL = "https://login.microsoftonline.com/organizations/discovery/v2.0/keys"
MICROSOFT_ISSUER = "https://login.microsoftonline.com/{tid}/v2.0"
GOOGLE_AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
MICROSOFT_SMTP = ("smtp.office365.com", 587)
GOOGLE_SMTP = ("smtp.gmail.com", 587)
MICROSOFT_SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"
GOOGLE_MAIL_SCOPE = "https://mail.google.com/"


# --------------------------------------------------------------------------------------------------- errors


class OAuthFlowError(Exception):
    """The sign-in or a token refresh failed."""


class ProviderUnreachable(OAuthFlowError):
    """Network failure, timeout, 5xx or a non-OAuth answer from the provider: try again later."""


class ProviderError(OAuthFlowError):
    """The provider answered with an OAuth error other than the sign-in-again ones (usually our app registration)."""

    def __init__(self, error: str, description: str | None, status: int) -> None:
        super().__init__(error)  # the description stays out of str(): providers may echo request details
        self.error = error
        self.description = description
        self.status = status


class GrantRevoked(ProviderError):
    """``invalid_grant`` (the refresh token is revoked or expired, or the code/PKCE verifier is wrong), and the
    errors that ask for a new interactive sign-in. Whatever the cause, the remedy is: sign in again."""


SIGN_IN_AGAIN_ERRORS = frozenset({"invalid_grant", "interaction_required", "login_required", "consent_required"})


class ScopeNotGranted(OAuthFlowError):
    """The person unticked the mail permission on the consent screen (Google shows a checkbox per scope)."""


class InvalidIdToken(OAuthFlowError):
    """The id_token is missing, badly signed, for another client or issuer, expired, or names no mailbox."""


# ------------------------------------------------------------------------------------------------- provider


@dataclass(frozen=True)
class OAuthProvider:
    """Everything provider-specific. Build with :func:`microsoft` / :func:`google`."""

    name: str
    label: str  # "Microsoft", "Google": how people name it
    client_id: str
    client_secret: str = field(repr=False)
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]
    smtp_host: str
    smtp_port: int
    """The provider's own SMTP submission server (STARTTLS): a token is never offered to a host someone typed."""
    extra_authorize_params: tuple[tuple[str, str], ...] = ()
    required_scopes: tuple[str, ...] = ()
    """Scopes the sign-in is useless without; checked against the ``scope`` the token response grants."""
    issuers: tuple[str, ...] = ()
    """Accepted id_token ``iss`` values; ``{tid}`` is replaced by the token's own ``tid`` claim (Microsoft)."""
    jwks_url: str | None = None
    """The id_token signing keys. Unreachable: the id_token came straight from the token endpoint over TLS
    (OpenID Connect Core 3.1.3.7), and the first XOAUTH2 login confirms the mailbox."""
    address_claims: tuple[str, ...] = ("email",)
    require_verified_email: bool = False
    scope_on_refresh: bool = False
    token_endpoint_auth_method: str = "client_secret_post"


def microsoft(
    client_id: str,
    client_secret: str,
    *,
    authorize_url: str = MICROSOFT_AUTHORIZE_URL,
    token_url: str = MICROSOFT_TOKEN_URL,
    jwks_url: str | None = MICROSOFT_JWKS_URL,
    smtp: tuple[str, int] = MICROSOFT_SMTP,
) -> OAuthProvider:
    """Microsoft identity platform v2.0, work and school accounts (Microsoft 365)."""
    return OAuthProvider(
        name=MICROSOFT,
        label="Microsoft",
        client_id=client_id,
        client_secret=client_secret,
        authorize_url=authorize_url,
        token_url=token_url,
        scopes=(MICROSOFT_SMTP_SCOPE, "offline_access", "openid", "email"),
        smtp_host=smtp[0],
        smtp_port=smtp[1],
        extra_authorize_params=(("prompt", "select_account"),),
        required_scopes=(MICROSOFT_SMTP_SCOPE,),
        issuers=(MICROSOFT_ISSUER,),
        jwks_url=jwks_url,
        address_claims=("email", "preferred_username"),
        scope_on_refresh=True,
    )


def google(
    client_id: str,
    client_secret: str,
    *,
    authorize_url: str = GOOGLE_AUTHORIZE_URL,
    token_url: str = GOOGLE_TOKEN_URL,
    jwks_url: str | None = GOOGLE_JWKS_URL,
    smtp: tuple[str, int] = GOOGLE_SMTP,
) -> OAuthProvider:
    """Google (Gmail, Google Workspace). ``https://mail.google.com/`` is a restricted scope (README)."""
    return OAuthProvider(
        name=GOOGLE,
        label="Google",
        client_id=client_id,
        client_secret=client_secret,
        authorize_url=authorize_url,
        token_url=token_url,
        scopes=(GOOGLE_MAIL_SCOPE, "openid", "email"),
        smtp_host=smtp[0],
        smtp_port=smtp[1],
        # Without both, Google issues a refresh token only at the very first consent.
        extra_authorize_params=(("access_type", "offline"), ("prompt", "consent")),
        required_scopes=(GOOGLE_MAIL_SCOPE,),
        issuers=GOOGLE_ISSUERS,
        jwks_url=jwks_url,
        address_claims=("email",),
        require_verified_email=True,
    )


# --------------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Tokens:
    """A token response. The refresh token is stored encrypted like SMTP passwords; neither token is ever logged."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: int
    """Epoch seconds when the access token stops working."""
    scope: str | None = None
    address: str | None = None
    """The mailbox named by the id_token (sign-in only)."""
    id_token_verified: bool = False
    """True when the id_token signature was checked against the provider's keys."""


# ------------------------------------------------------------------------------------------------ the flow


def new_code_verifier() -> str:
    """A PKCE code verifier: 64 characters of [A-Za-z0-9] (RFC 7636 allows 43-128)."""
    return str(generate_token(64))


def authorization_url(provider: OAuthProvider, redirect_uri: str, state: str, code_verifier: str) -> str:
    """Where the browser goes to sign in. The verifier stays on our side (never in ``state``) until the callback."""
    if not code_verifier:
        raise ValueError("a PKCE code verifier is required")
    url = prepare_grant_uri(
        provider.authorize_url,
        client_id=provider.client_id,
        response_type="code",
        redirect_uri=redirect_uri,
        scope=" ".join(provider.scopes),
        state=state,
        code_challenge=create_s256_code_challenge(code_verifier),
        code_challenge_method="S256",
        **dict(provider.extra_authorize_params),
    )
    return str(url)


async def exchange_code(
    http: aiohttp.ClientSession, provider: OAuthProvider, code: str, code_verifier: str, redirect_uri: str
) -> tuple[Tokens, str]:
    """Trade the authorization code for tokens. Returns the tokens (without address) and the raw id_token, which
    bot/mail/id_token.py reads. Raises OAuthFlowError subclasses."""
    if not code_verifier:  # prepare_token_request would silently drop an empty one
        raise ValueError("a PKCE code verifier is required")
    body = prepare_token_request(
        "authorization_code", redirect_uri=redirect_uri, code=code, code_verifier=code_verifier
    )
    token = await _token_request(http, provider, body)
    _check_granted_scopes(provider, token)
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        raise InvalidIdToken(f"{provider.name} returned no id_token")
    if not token.get("refresh_token"):
        raise ProviderError("no_refresh_token", "the provider issued no refresh token", 200)
    return _tokens(token, refresh_token=None), id_token


async def refresh(http: aiohttp.ClientSession, provider: OAuthProvider, refresh_token: str) -> Tokens:
    """A new access token. The result carries the new refresh token when the provider rotated it (Microsoft does:
    store it), else the old one (Google)."""
    extra = {"scope": " ".join(provider.scopes)} if provider.scope_on_refresh else {}
    body = prepare_token_request("refresh_token", refresh_token=refresh_token, **extra)
    return _tokens(await _token_request(http, provider, body), refresh_token=refresh_token)


# ------------------------------------------------------------------------------------------------- internals


async def _token_request(http: aiohttp.ClientSession, provider: OAuthProvider, body: str) -> OAuth2Token:
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
    auth = ClientAuth(provider.client_id, provider.client_secret, provider.token_endpoint_auth_method)
    url, headers, body = auth.prepare("POST", provider.token_url, headers, body)
    try:
        timeout = aiohttp.ClientTimeout(total=TOKEN_TIMEOUT)
        async with http.post(url, headers=headers, data=body.encode(), timeout=timeout) as resp:
            status, text = resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ProviderUnreachable(f"{provider.name} token endpoint: {type(exc).__name__}") from None
    payload = json_object(text)
    if payload is not None and isinstance(payload.get("error"), str):
        error, description = payload["error"], payload.get("error_description")
        log.info("%s token endpoint answered %s (HTTP %s)", provider.name, error[:40], status)
        if status >= 500 or error == "temporarily_unavailable":
            raise ProviderUnreachable(f"{provider.name} token endpoint: {error[:40]}")
        cls = GrantRevoked if error in SIGN_IN_AGAIN_ERRORS else ProviderError
        raise cls(error[:40], description if isinstance(description, str) else None, status)
    if status != 200 or payload is None or not isinstance(payload.get("access_token"), str):
        raise ProviderUnreachable(f"{provider.name} token endpoint answered HTTP {status} without a token")
    if str(payload.get("token_type", "")).lower() != "bearer":
        raise ProviderError("unsupported_token_type", None, status)
    return OAuth2Token.from_dict(payload)


def _check_granted_scopes(provider: OAuthProvider, token: OAuth2Token) -> None:
    granted = token.get("scope")
    if not isinstance(granted, str):  # RFC 6749 5.1: omitted means "as requested"
        return
    granted_set = {s.casefold() for s in granted.split()}
    missing = [s for s in provider.required_scopes if s.casefold() not in granted_set]
    if missing:
        raise ScopeNotGranted(f"{provider.name} did not grant {', '.join(missing)}")


def _tokens(token: OAuth2Token, *, refresh_token: str | None) -> Tokens:
    expires_at = token.get("expires_at")
    if not isinstance(expires_at, int):  # expires_in is only RECOMMENDED (RFC 6749 5.1); both providers send it
        expires_at = int(time.time()) + 3600
    new_refresh = token.get("refresh_token")
    return Tokens(
        access_token=str(token["access_token"]),
        refresh_token=new_refresh if isinstance(new_refresh, str) and new_refresh else refresh_token,
        expires_at=expires_at,
        scope=token.get("scope"),
    )


def json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class OAuthHttp:
    """The HTTP client for token endpoints and key sets: one aiohttp session, opened on first use (inside the
    running loop), closed when the bot stops."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
