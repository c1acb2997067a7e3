""" "Sign in with Microsoft / Google" from the company-domain form: the link, the state, and the browser's return.

The modal's button carries a link to PUBLIC_URL/oauth/start with a signed ticket naming the Slack user, the modal
(view id) and the provider. Clicking it creates the OAuth ``state`` (signed, single use, bound to that user and
modal, valid 10 minutes from the click) and the PKCE verifier, which never leaves the bot, and redirects to the
provider. The provider sends the browser back to PUBLIC_URL/oauth/callback: the state is redeemed once, the code
exchanged with the verifier, the id_token read for the mailbox, and the tokens stored (encrypted) for that user's
modal only. The Slack side then updates the modal in place ("Signed in as …"); saving attaches the sign-in to the
identity. Nothing the browser carries is secret, and nothing from the browser is trusted without the signature."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets as random
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlencode

from sqlalchemy import delete, select, update

from bot.mail.id_token import signed_in_mailbox
from bot.mail.oauth import (
    GrantRevoked,
    InvalidIdToken,
    OAuthFlowError,
    OAuthProvider,
    ProviderUnreachable,
    ScopeNotGranted,
    authorization_url,
    exchange_code,
    new_code_verifier,
)
from bot.services.identities.grants import MailboxGrants
from bot.services.notifier import Notifier, SignInOutcome
from bot.services.notifier import SignInProblem as Problem
from bot.services.secrets import SecretBox
from models import Database, MailboxProvider, OAuthSignIn
from models.base import utcnow

log = logging.getLogger(__name__)

START_PATH = "/oauth/start"
CALLBACK_PATH = "/oauth/callback"
STATE_LIFETIME = timedelta(minutes=10)
LINK_LIFETIME = timedelta(days=1)
"""A modal's sign-in link works this long (each click makes a fresh 10-minute state)."""
MAX_FORM = 20000


class Refusal(StrEnum):
    """Why a link or a state was refused (the page says so; nothing is stored)."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    USED = "used"
    NOT_OFFERED = "not_offered"


class SignInRefused(Exception):
    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason)
        self.reason = reason


class MailboxSignIn:
    def __init__(
        self,
        db: Database,
        secrets: SecretBox,
        grants: MailboxGrants,
        notifier: Notifier,
        *,
        public_url: str | None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.secrets = secrets
        self.grants = grants
        self.notifier = notifier
        self.public_url = (public_url or "").rstrip("/")
        self.clock = clock

    @property
    def providers(self) -> Mapping[str, OAuthProvider]:
        return self.grants.providers

    @property
    def redirect_uri(self) -> str:
        return self.public_url + CALLBACK_PATH

    def offered(self, provider: str | None) -> OAuthProvider | None:
        """The provider's sign-in, when it is configured (client id and PUBLIC_URL) — else None."""
        return self.providers.get(provider or "") if self.public_url else None

    def link(self, provider: str, *, slack_user_id: str, view_id: str) -> str | None:
        """The URL of the modal's Sign in button (None when that sign-in is not offered)."""
        if self.offered(provider) is None:
            return None
        expires = int((self.clock() + LINK_LIFETIME).timestamp())
        ticket = self._sign("ticket", {"u": slack_user_id, "v": view_id, "p": provider, "e": expires})
        return f"{self.public_url}{START_PATH}?{urlencode({'t': ticket})}"

    async def remember_form(self, slack_user_id: str, view_id: str, form: str) -> None:
        """The modal as it was when its Sign in button was clicked, to update it when the browser comes back."""
        await self._upsert(slack_user_id, view_id, form=form[:MAX_FORM])

    async def start(self, ticket: str) -> str:
        """GET /oauth/start: a fresh state and PKCE verifier for the ticket's user and modal; the provider's URL."""
        claims = self._verify("ticket", ticket)
        provider = self.offered(claims["p"])
        if provider is None:
            raise SignInRefused(Refusal.NOT_OFFERED)
        verifier = new_code_verifier()
        nonce = random.token_urlsafe(24)
        expires = self.clock() + STATE_LIFETIME
        await self._upsert(
            claims["u"],
            claims["v"],
            provider=MailboxProvider(provider.name),
            state_nonce=nonce,
            code_verifier_encrypted=self.secrets.encrypt(verifier),
            state_expires_at=expires,
        )
        state = self._sign(
            "state", {"n": nonce, "u": claims["u"], "v": claims["v"], "p": provider.name, "e": int(expires.timestamp())}
        )
        return authorization_url(provider, self.redirect_uri, state, verifier)

    async def complete(self, state: str, *, code: str | None, error: str | None) -> SignInOutcome:
        """GET /oauth/callback: redeem the state (once), exchange the code, store the tokens for that modal, tell
        the Slack side. Raises SignInRefused (and changes nothing) for a bad, used or expired state."""
        claims = self._verify("state", state)
        provider = self.providers.get(claims["p"])
        if provider is None:
            raise SignInRefused(Refusal.NOT_OFFERED)
        verifier, form = await self._redeem(claims)
        user, view = claims["u"], claims["v"]
        outcome = SignInOutcome(user, view, provider.name, provider.label, form=form)
        problem: Problem | None = None
        if error or not code:
            log.info("sign-in with %s came back without a code (%s)", provider.name, (error or "none")[:40])
            problem = Problem.DECLINED
        else:
            try:
                tokens, id_token = await exchange_code(
                    self.grants.http.session(), provider, code, verifier, self.redirect_uri
                )
                tokens = await signed_in_mailbox(self.grants.http.session(), provider, tokens, id_token)
            except ScopeNotGranted:
                problem = Problem.SCOPE_NOT_GRANTED
            except ProviderUnreachable as exc:
                log.warning("sign-in with %s: provider unreachable (%s)", provider.name, exc)
                problem = Problem.UNREACHABLE
            except (GrantRevoked, InvalidIdToken, OAuthFlowError) as exc:
                log.warning("sign-in with %s failed: %s", provider.name, exc)
                problem = Problem.FAILED
            else:
                await self.grants.store_for_form(provider.name, tokens, slack_user_id=user, view_id=view)
                outcome = SignInOutcome(user, view, provider.name, provider.label, tokens.address, form=form)
        if problem is not None:
            outcome = SignInOutcome(user, view, provider.name, provider.label, problem=problem, form=form)
        outcome = replace(outcome, link=self.link(provider.name, slack_user_id=user, view_id=view))
        try:
            await self.notifier.sign_in_finished(outcome)
        except Exception:  # the page still tells the person; the modal shows it on its next update
            log.exception("could not show the sign-in in the modal")
        return outcome

    async def purge(self, older_than: timedelta = LINK_LIFETIME) -> int:
        """Sign-ins of modals long closed: their states, verifiers, form copies and unsaved tokens."""
        async with self.db.transaction() as session:
            gone = await session.execute(delete(OAuthSignIn).where(OAuthSignIn.updated_at < self.clock() - older_than))
        return int(gone.rowcount or 0) + await self.grants.purge_unattached(older_than)  # type: ignore[attr-defined]

    # ---- the pending row --------------------------------------------------------------------------------------
    async def _upsert(self, slack_user_id: str, view_id: str, **values: object) -> None:
        now = self.clock()
        async with self.db.transaction() as session:
            row = await session.scalar(
                select(OAuthSignIn)
                .where(OAuthSignIn.slack_user_id == slack_user_id, OAuthSignIn.view_id == view_id)
                .with_for_update()
            )
            if row is None:
                row = OAuthSignIn(slack_user_id=slack_user_id, view_id=view_id)
                session.add(row)
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = now

    async def _redeem(self, claims: dict[str, str]) -> tuple[str, str | None]:
        """Use the state once: clear its nonce and verifier in the transaction that reads them."""
        now = self.clock()
        async with self.db.transaction() as session:
            row = await session.scalar(
                select(OAuthSignIn).where(OAuthSignIn.state_nonce == claims["n"]).with_for_update()
            )
            if row is None or (row.slack_user_id, row.view_id) != (claims["u"], claims["v"]):
                raise SignInRefused(Refusal.USED)
            if row.state_expires_at is None or row.state_expires_at <= now:
                raise SignInRefused(Refusal.EXPIRED)
            encrypted, form = row.code_verifier_encrypted, row.form
            await session.execute(
                update(OAuthSignIn)
                .where(OAuthSignIn.id == row.id)
                .values(state_nonce=None, code_verifier_encrypted=None, state_expires_at=None, updated_at=now)
            )
        if not encrypted:  # no PKCE verifier: the code must not be redeemed without it
            raise SignInRefused(Refusal.USED)
        return self.secrets.decrypt(encrypted), form

    # ---- signed tickets and states ----------------------------------------------------------------------------
    def _sign(self, kind: str, claims: dict[str, object]) -> str:
        payload = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"v1.{payload}.{self.secrets.mac('oauth', kind, payload)}"

    def _verify(self, kind: str, token: str) -> dict[str, str]:
        parts = (token or "").split(".")
        if len(parts) != 3 or parts[0] != "v1" or len(token) > 2048 or not token.isascii():
            raise SignInRefused(Refusal.MALFORMED)
        payload, mac = parts[1], parts[2]
        if not hmac.compare_digest(mac, self.secrets.mac("oauth", kind, payload)):
            raise SignInRefused(Refusal.BAD_SIGNATURE)
        try:
            claims = json.loads(_b64decode(payload))
        except ValueError:
            raise SignInRefused(Refusal.MALFORMED) from None
        if not isinstance(claims, dict) or not isinstance(claims.get("e"), int):
            raise SignInRefused(Refusal.MALFORMED)
        if claims["e"] <= self.clock().timestamp():
            raise SignInRefused(Refusal.EXPIRED)
        if any(not isinstance(claims.get(k), str) for k in ("u", "v", "p")):
            raise SignInRefused(Refusal.MALFORMED)
        return {k: str(v) for k, v in claims.items()}


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("bad base64") from exc
