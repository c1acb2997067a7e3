"""Sending credentials from Slack: what a team needs to point its mailer at the submission gateway (host, port, TLS
mode, username, password), issued by the identity's creator or a manager.

The password exists only in the IssuedAccess returned here, for the one modal that shows it: it is never stored
(only its keyed hash, services/gateway/credentials.py), logged, audited or posted. Issuing again revokes the
identity's earlier credentials in the same transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bot.services.gateway.credentials import GatewayCredentials, IssuedCredential
from bot.services.identities import IdentityService
from bot.services.policy import IdentityAction, Policy
from models import Identity


class GatewayTls(StrEnum):
    STARTTLS = "starttls"  # required before AUTH (SUBMISSION_TLS_* set)
    NONE = "none"  # the gateway is on loopback: no TLS, mailers on the same host only


@dataclass(frozen=True)
class GatewayEndpoint:
    """Where mailers reach the gateway (SUBMISSION_PUBLIC_HOST, else SUBMISSION_SMTP, and its TLS mode)."""

    host: str
    port: int
    tls: GatewayTls


@dataclass(frozen=True)
class CurrentAccess:
    """What the identity has now: its working credentials (usernames and when they were issued)."""

    identity: Identity
    credentials: list[tuple[str, datetime]]


@dataclass(frozen=True)
class IssuedAccess:
    identity: Identity
    endpoint: GatewayEndpoint
    credential: IssuedCredential = field(repr=False)
    revoked: list[str] = field(default_factory=list)


class SmtpAccess:
    def __init__(
        self,
        identities: IdentityService,
        credentials: GatewayCredentials,
        policy: Policy,
        endpoint: Callable[[], GatewayEndpoint],
    ) -> None:
        self.identities = identities
        self.credentials = credentials
        self.policy = policy
        self.endpoint = endpoint

    async def current(self, identity_id: int, *, actor: str) -> CurrentAccess:
        """The identity's working credentials. Raises NotPermitted (creator or manager) or NotFound."""
        identity = await self.identities.get(identity_id)
        await self.policy.require(actor, identity, IdentityAction.CREDENTIALS)
        active = await self.credentials.active(identity_id)
        return CurrentAccess(identity, [(c.username, c.created_at) for c in active])

    async def issue(self, identity_id: int, *, actor: str) -> IssuedAccess:
        """New credentials for the identity; every earlier one is revoked. Raises NotPermitted or NotFound."""
        identity = await self.identities.get(identity_id)
        await self.policy.require(actor, identity, IdentityAction.CREDENTIALS)
        credential, revoked = await self.credentials.replace(identity_id, actor=actor)
        return IssuedAccess(identity, self.endpoint(), credential, revoked)
