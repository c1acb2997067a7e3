"""Reading the OpenID Connect id_token of a sign-in: which mailbox signed in.

The signature is checked with joserfc against the provider's published keys when they can be fetched; the claims
(issuer, audience, expiry, ``at_hash``, ``azp``) always, with Authlib's ``CodeIDToken``. Without the keys the
id_token is still trusted as far as OpenID Connect Core 3.1.3.7 allows (it came straight from the token endpoint),
and the first XOAUTH2 login confirms the mailbox: the SMTP server accepts a token only for its own mailbox."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from authlib.oidc.core import CodeIDToken
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bot.mail.oauth import TOKEN_TIMEOUT, InvalidIdToken, OAuthProvider, ProviderUnreachable, Tokens, json_object

log = logging.getLogger(__name__)

ID_TOKEN_LEEWAY = 120
"""Clock skew, in seconds, tolerated on the id_token's ``exp``/``iat``."""
ALGORITHMS = ("RS256",)


async def signed_in_mailbox(
    http: aiohttp.ClientSession, provider: OAuthProvider, tokens: Tokens, id_token: str
) -> Tokens:
    """The tokens with `address` (and whether the id_token's signature was verified) filled in."""
    claims, verified = await _read(http, provider, id_token, tokens.access_token)
    address = _mailbox_address(provider, claims)
    return Tokens(
        tokens.access_token, tokens.refresh_token, tokens.expires_at, tokens.scope, address, id_token_verified=verified
    )


async def fetch_jwks(http: aiohttp.ClientSession, url: str) -> KeySet:
    """The provider's signing keys. Sign-ins are rare: no cache, so rotated keys are always current."""
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT)) as resp:
            status, text = resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ProviderUnreachable(f"keys at {url}: {type(exc).__name__}") from None
    document = json_object(text)
    if status != 200 or document is None:
        raise ProviderUnreachable(f"keys at {url}: HTTP {status}")
    try:
        return KeySet.import_key_set(document)  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise ProviderUnreachable(f"keys at {url} are not a key set: {type(exc).__name__}") from None


async def _read(
    http: aiohttp.ClientSession, provider: OAuthProvider, id_token: str, access_token: str
) -> tuple[dict[str, Any], bool]:
    keys: KeySet | None = None
    if provider.jwks_url:
        try:
            keys = await fetch_jwks(http, provider.jwks_url)
        except ProviderUnreachable as exc:
            log.warning(
                "%s: id_token signature not checked (%s); the first login confirms the mailbox", provider.name, exc
            )
    try:
        if keys is not None:
            decoded = jwt.decode(id_token, keys, algorithms=list(ALGORITHMS))
            header, claims = dict(decoded.header), dict(decoded.claims)
        else:
            compact = jws.extract_compact(id_token.encode())
            header, claims = dict(compact.headers()), json.loads(compact.payload)
            if not isinstance(claims, dict):
                raise ValueError("the id_token payload is not a JSON object")
        if header.get("alg") not in ALGORITHMS:
            raise ValueError(f"id_token algorithm {str(header.get('alg'))[:20]!r} not allowed")
        issuers = [i.replace("{tid}", str(claims.get("tid", ""))) for i in provider.issuers]
        if not issuers:  # an empty list would make the check accept any issuer
            raise ValueError(f"no accepted issuers configured for {provider.name}")
        options = {
            "iss": {"essential": True, "values": issuers},
            "aud": {"essential": True, "value": provider.client_id},
        }
        params = {"client_id": provider.client_id, "access_token": access_token}  # for azp and at_hash
        CodeIDToken(claims, header, options, params).validate(leeway=ID_TOKEN_LEEWAY)
    except (JoseError, ValueError) as exc:
        raise InvalidIdToken(f"{provider.name} id_token refused: {type(exc).__name__}") from None
    return claims, keys is not None


def _mailbox_address(provider: OAuthProvider, claims: Mapping[str, Any]) -> str:
    if provider.require_verified_email and claims.get("email_verified") not in (True, "true"):
        raise InvalidIdToken(f"{provider.name} id_token: the email address is not verified")
    for name in provider.address_claims:
        value = claims.get(name)
        if isinstance(value, str) and "@" in value and len(value) <= 254:
            return value.strip().lower()
    raise InvalidIdToken(f"{provider.name} id_token names no mailbox")
