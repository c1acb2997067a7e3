"""A local OAuth 2.0 / OpenID Connect authorization server in Microsoft's or Google's dialect, for tests and the demo.

`FakeAuthorizationServer` (aiohttp, a free loopback port): ``/authorize`` approves at once and redirects to the
registered redirect URI with a code (PKCE S256 required); ``/token`` does ``authorization_code`` (the verifier must
match) and ``refresh_token`` (Microsoft-style rotation, or Google-style keep); ``/jwks`` serves the RS256 key that
signs the id_tokens, which carry the providers' real issuers so the bot's real provider settings check them.
Controls: which mailbox signs in, token lifetime, expire access tokens now, revoke a grant, deny consent, untick a
scope, sign with a foreign key, hold refresh requests until released. `env()` gives the bot's settings for it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from bot.mail.oauth import GOOGLE_ISSUERS, GOOGLE_MAIL_SCOPE, MICROSOFT_ISSUER, MICROSOFT_SMTP_SCOPE

Style = Literal["microsoft", "google"]

CLIENT_ID = "identity-bot-test-client"
CLIENT_SECRET = "identity-bot-test-secret"
TENANT_ID = "9f2c1a7e-0000-4000-8000-00000000c0de"
CODE_LIFETIME = 600
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")

_SCOPES: dict[Style, tuple[str, set[str]]] = {  # (scope the SMTP resource needs, all scopes understood)
    "microsoft": (MICROSOFT_SMTP_SCOPE, {MICROSOFT_SMTP_SCOPE, "offline_access", "openid", "email", "profile"}),
    "google": (GOOGLE_MAIL_SCOPE, {GOOGLE_MAIL_SCOPE, "openid", "email", "profile"}),
}


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    mailbox: str
    refresh_allowed: bool
    expires_at: float


@dataclass
class _Grant:
    mailbox: str
    client_id: str
    scope: str
    refresh_token: str | None
    revoked: bool = False


@dataclass
class _AccessToken:
    grant: _Grant
    expires_at: float


@dataclass
class TokenRequest:
    """What the token endpoint received (for assertions)."""

    form: dict[str, str]
    status: int
    error: str | None


@dataclass
class FakeAuthorizationServer:
    style: Style = "microsoft"
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    redirect_uris: set[str] = field(default_factory=set)
    mailbox: str = "alice@example.com"
    """The account that 'signs in' at /authorize."""
    access_token_lifetime: int = 3600
    access_token_length: int | None = None
    """Default by style: Microsoft access tokens are JWTs of 1.5-2.5 KB (1500 here); Google's ~200 characters."""
    rotate_refresh_tokens: bool = True
    """Microsoft rotates; here the old refresh token then stops working, which catches a caller that drops it."""
    withheld_scopes: set[str] = field(default_factory=set)
    """Scopes the user 'unticks' on the consent screen (Google's granular consent): left out of the grant."""
    id_token_overrides: dict[str, Any] = field(default_factory=dict)
    sign_id_tokens_with_foreign_key: bool = False

    base_url: str = ""
    token_requests: list[TokenRequest] = field(default_factory=list)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _grants_by_refresh: dict[str, _Grant] = field(default_factory=dict)
    _access: dict[str, _AccessToken] = field(default_factory=dict)
    _consented: set[tuple[str, str]] = field(default_factory=set)
    _deny_next: str | None = None
    _broken_token_endpoint: tuple[int, str] | None = None
    _runner: web.AppRunner | None = None
    _held: asyncio.Event | None = None
    refresh_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _key: RSAKey = field(default_factory=lambda: _rsa_key("fake-1"))
    _foreign_key: RSAKey = field(default_factory=lambda: _rsa_key("fake-1"))

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1") -> str:
        app = web.Application()
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def __repr__(self) -> str:
        return f"FakeAuthorizationServer(style={self.style!r}, base_url={self.base_url!r})"

    @property
    def issuer(self) -> str:
        """The real provider's issuer: the bot checks our id_tokens exactly as it checks the provider's."""
        return MICROSOFT_ISSUER.replace("{tid}", TENANT_ID) if self.style == "microsoft" else GOOGLE_ISSUERS[0]

    def env(self) -> dict[str, str]:
        """The bot's settings for signing in here (the provider's SMTP server is the test's to add)."""
        prefix = self.style.upper()
        return {
            f"{prefix}_CLIENT_ID": self.client_id,
            f"{prefix}_CLIENT_SECRET": self.client_secret,
            f"{prefix}_AUTHORIZE_URL": f"{self.base_url}/authorize",
            f"{prefix}_TOKEN_URL": f"{self.base_url}/token",
            f"{prefix}_JWKS_URL": f"{self.base_url}/jwks",
        }

    # ------------------------------------------------------------------------------------------- controls

    def sign_in_as(self, mailbox: str) -> None:
        self.mailbox = mailbox

    def deny_next_authorization(self, error: str = "access_denied") -> None:
        self._deny_next = error

    def break_token_endpoint(self, status: int = 503, body: str = "<html>Service Unavailable</html>") -> None:
        """The next token request gets this answer instead (an HTML error page by default)."""
        self._broken_token_endpoint = (status, body)

    def hold_refreshes(self) -> asyncio.Event:
        """Refresh requests wait (after `refresh_arrived` is set) until the returned event is set."""
        self._held = asyncio.Event()
        return self._held

    def refresh_requests(self) -> list[TokenRequest]:
        return [r for r in self.token_requests if r.form.get("grant_type") == "refresh_token"]

    def expire_access_tokens(self) -> None:
        now = time.time()
        for token in self._access.values():
            token.expires_at = min(token.expires_at, now - 1)

    def revoke(self, mailbox: str, *, access_tokens_too: bool = False) -> int:
        """Revoke every grant of ``mailbox``: refreshing fails with invalid_grant. Like the real providers, issued
        access tokens keep working until they expire unless ``access_tokens_too``."""
        grants = [g for g in self._grants_by_refresh.values() if g.mailbox == mailbox]
        for grant in grants:
            grant.revoked = True
        if access_tokens_too:
            self._access = {k: v for k, v in self._access.items() if v.grant.mailbox != mailbox}
        return len(grants)

    def mailbox_for_access_token(self, token: str) -> str | None:
        """The mailbox a live access token belongs to, or None (unknown or expired)."""
        live = self._access.get(token)
        if live is None or live.expires_at <= time.time():
            return None
        return live.grant.mailbox

    # ------------------------------------------------------------------------------------------ endpoints

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        redirect_uri = q.get("redirect_uri", "")
        # RFC 6749 4.1.2.1: a bad client_id or redirect_uri is shown to the user, never redirected.
        if q.get("client_id") != self.client_id:
            return web.Response(status=400, text="unknown client_id")
        if redirect_uri not in self.redirect_uris:
            return web.Response(status=400, text="redirect_uri not registered")

        def fail(error: str, description: str) -> NoReturn:
            params = {"error": error, "error_description": description}
            if "state" in q:
                params["state"] = q["state"]
            raise web.HTTPFound(_add_query(redirect_uri, params))

        if q.get("response_type") != "code":
            fail("unsupported_response_type", "only response_type=code")
        if not q.get("state"):
            fail("invalid_request", "state is required here")
        challenge = q.get("code_challenge", "")
        if q.get("code_challenge_method") != "S256" or len(challenge) != 43:
            fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
        mail_scope, known = _SCOPES[self.style]
        scopes = q.get("scope", "").split()
        if not scopes or not set(scopes) <= known or mail_scope not in scopes:
            fail("invalid_scope", f"scope must include {mail_scope} and only {sorted(known)}")
        if self._deny_next:
            error, self._deny_next = self._deny_next, None
            fail(error, "the user declined")

        if self.style == "microsoft":
            refresh_allowed = "offline_access" in scopes
        else:  # Google: refresh tokens need access_type=offline, and come only with a (re)consent
            first_consent = (self.client_id, self.mailbox) not in self._consented
            refresh_allowed = q.get("access_type") == "offline" and (first_consent or q.get("prompt") == "consent")
            self._consented.add((self.client_id, self.mailbox))
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(
            self.client_id,
            redirect_uri,
            challenge,
            " ".join(s for s in scopes if s not in self.withheld_scopes),
            self.mailbox,
            refresh_allowed,
            time.time() + CODE_LIFETIME,
        )
        raise web.HTTPFound(_add_query(redirect_uri, {"code": code, "state": q["state"]}))

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if self._broken_token_endpoint is not None:
            status, page = self._broken_token_endpoint
            self._broken_token_endpoint = None
            self.token_requests.append(TokenRequest(form, status, None))
            content_type = "application/json" if page.startswith("{") else "text/html"
            return web.Response(status=status, text=page, content_type=content_type)
        body: dict[str, Any]
        if form.get("grant_type") == "refresh_token":
            self.refresh_arrived.set()
            if self._held is not None:
                await self._held.wait()
        try:
            self._authenticate_client(request, form)
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                body = self._code_grant(form)
            elif grant_type == "refresh_token":
                body = self._refresh_grant(form)
            else:
                raise _OAuthError("unsupported_grant_type", f"grant_type {grant_type!r}")
        except _OAuthError as exc:
            self.token_requests.append(TokenRequest(form, exc.status, exc.error))
            return web.json_response(
                {"error": exc.error, "error_description": exc.description},
                status=exc.status,
                headers={"Cache-Control": "no-store"},
            )
        self.token_requests.append(TokenRequest(form, 200, None))
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(KeySet([self._key]).as_dict(private=False))

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.base_url}/authorize",
                "token_endpoint": f"{self.base_url}/token",
                "jwks_uri": f"{self.base_url}/jwks",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    # ----------------------------------------------------------------------------------------- grant logic

    def _authenticate_client(self, request: web.Request, form: dict[str, str]) -> None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id = None
        if client_id != self.client_id or secret != self.client_secret:
            raise _OAuthError("invalid_client", "client authentication failed", status=401)

    def _code_grant(self, form: dict[str, str]) -> dict[str, Any]:
        code = self._codes.pop(form.get("code", ""), None)  # single use
        if code is None or code.expires_at < time.time():
            raise _OAuthError("invalid_grant", "authorization code unknown, used or expired")
        if code.client_id != form.get("client_id", self.client_id) or code.redirect_uri != form.get("redirect_uri"):
            raise _OAuthError("invalid_grant", "redirect_uri or client does not match the authorization request")
        verifier = form.get("code_verifier")
        if not verifier:
            raise _OAuthError("invalid_grant", "code_verifier missing (PKCE)")
        if not _VERIFIER.fullmatch(verifier):
            raise _OAuthError("invalid_grant", "code_verifier is not 43-128 unreserved characters")
        if _s256(verifier) != code.challenge:
            raise _OAuthError("invalid_grant", "code_verifier does not match code_challenge")
        refresh_token = secrets.token_urlsafe(48) if code.refresh_allowed else None
        grant = _Grant(code.mailbox, code.client_id, code.scope, refresh_token)
        if refresh_token:
            self._grants_by_refresh[refresh_token] = grant
        body = self._issue_access_token(grant)
        if "openid" in code.scope.split():
            body["id_token"] = self._id_token(grant, body["access_token"])
        return body

    def _refresh_grant(self, form: dict[str, str]) -> dict[str, Any]:
        old = form.get("refresh_token", "")
        grant = self._grants_by_refresh.get(old)
        if grant is None or grant.revoked or grant.client_id != form.get("client_id", self.client_id):
            raise _OAuthError("invalid_grant", "refresh token revoked, expired or unknown")
        if "scope" in form and not set(form["scope"].split()) <= set(grant.scope.split()):
            raise _OAuthError("invalid_scope", "refresh may not widen the scope")
        if self.rotate_refresh_tokens:
            del self._grants_by_refresh[old]
            grant.refresh_token = secrets.token_urlsafe(48)
            self._grants_by_refresh[grant.refresh_token] = grant
        body = self._issue_access_token(grant)
        if not self.rotate_refresh_tokens:
            del body["refresh_token"]  # Google: no new refresh token on refresh
        return body

    def _issue_access_token(self, grant: _Grant) -> dict[str, Any]:
        prefix, default_length = ("ya29.", 200) if self.style == "google" else ("eyJ0eXAi.", 1500)
        length = self.access_token_length or default_length
        token = prefix + secrets.token_urlsafe(length)[: length - len(prefix)]
        self._access[token] = _AccessToken(grant, time.time() + self.access_token_lifetime)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.access_token_lifetime,
            "scope": grant.scope,
        }
        if grant.refresh_token:
            body["refresh_token"] = grant.refresh_token
        return body

    def _id_token(self, grant: _Grant, access_token: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "sub": hashlib.sha256(grant.mailbox.encode()).hexdigest()[:32],
            "at_hash": _b64(hashlib.sha256(access_token.encode()).digest()[:16]),
        }
        if self.style == "microsoft":
            claims |= {"ver": "2.0", "tid": TENANT_ID, "preferred_username": grant.mailbox}
            if "email" in grant.scope.split():
                claims["email"] = grant.mailbox
        else:
            claims |= {"azp": self.client_id, "email": grant.mailbox, "email_verified": True}
        claims |= self.id_token_overrides
        key = self._foreign_key if self.sign_id_tokens_with_foreign_key else self._key
        return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)


# --------------------------------------------------------------------------------------------------- helpers


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(error)
        self.error, self.description, self.status = error, description, status


def _rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _s256(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def _add_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))
