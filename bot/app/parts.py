"""Settings -> the parts the composition root wires: the Slack client, the database, keys, domains, DKIM, the
relay, the OAuth providers, the gateway's public endpoint, server TLS. Each reads the settings it names."""

from __future__ import annotations

import ssl
from pathlib import Path

from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import ConfigError, OAuthAppSettings, Settings
from bot.files import secure_data
from bot.mail import oauth
from bot.mail.dkim import DkimKeyError, DkimSigner
from bot.mail.domains import PlatformDomains
from bot.mail.outbound import SmtpServer
from bot.services.gateway.access import GatewayEndpoint, GatewayTls
from bot.services.health import DomainSettings
from bot.services.incoming.pipeline import OnTokens
from bot.services.secrets import KeyMismatch, SecretBox, load_or_create_keys
from models import Database

DNS_TIMEOUT = 3.0  # seconds one DNS check of the health checks may take


def build_slack_client(settings: Settings) -> AsyncWebClient:
    return AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def open_database(settings: Settings) -> Database:
    """The database, with DATA_DIR and the database files private to the bot (created or tightened) before the
    first connection."""
    db = Database(settings.database_url)
    secure_data(settings.data_dir, db.sqlite_path)
    return db


def seen_requests_database(settings: Settings, db: Database) -> Database:
    """Where the replay guard records the Slack requests it has seen: the database itself, except on SQLite, where it
    is a file of its own beside it (`<database>-seen`). SQLite has one writer at a time, the inbound server commits
    mail continuously during a flood, and the sighting is written before Slack's ack: in one file, acks waited up to
    1.6 s behind mail (benchmarks/inbound.py). Every process sharing the database finds the same side file."""
    path = db.sqlite_path
    if path is None:
        return db
    seen = path.with_name(f"{path.name}-seen")
    secure_data(settings.data_dir, seen)
    return Database(f"sqlite:///{seen}")


def secret_box(settings: Settings) -> SecretBox:
    try:
        return SecretBox(load_or_create_keys(settings.secret_keys, settings.data_dir))
    except ValueError as exc:
        raise ConfigError("SECRET_KEYS", f"not a valid Fernet key ({exc})") from None


def key_problem(settings: Settings, exc: KeyMismatch) -> ConfigError:
    """A key that is not the database's stops the process: one line naming SECRET_KEYS, exit 2."""
    source = (
        "" if settings.secret_keys else f" (no SECRET_KEYS set: the key came from {settings.data_dir / 'secret.key'})"
    )
    return ConfigError("SECRET_KEYS", f"{exc}{source}")


def domains_of(settings: Settings) -> PlatformDomains:
    return PlatformDomains(settings.platform_domain, settings.tracking_domain)


def dkim_signer(settings: Settings) -> DkimSigner:
    return DkimSigner(
        domain=settings.platform_domain,
        selector=settings.dkim_selector,
        key_file=settings.dkim_private_key,
        data_dir=settings.data_dir,
    )


def signing_key_error(exc: DkimKeyError, settings: Settings) -> ConfigError:
    """A DKIM key that can't be used stops start-up naming the variable to fix."""
    variable = "DKIM_PRIVATE_KEY" if settings.dkim_private_key is not None else "DATA_DIR"
    return ConfigError(variable, str(exc).removeprefix("DKIM_PRIVATE_KEY: "))


def domain_settings(settings: Settings, signer: DkimSigner) -> DomainSettings:
    """What the health checks' DNS part needs: DNS_RESOLVER, and the platform domain's relay, selector and key."""
    return DomainSettings(
        resolver=settings.dns_resolver,
        timeout=DNS_TIMEOUT,
        platform_domain=settings.platform_domain,
        relay_host=settings.relay.host if settings.relay is not None else None,
        dkim_selector=settings.dkim_selector,
        dkim_key=signer.key,
    )


def both(first: OnTokens, second: OnTokens) -> OnTokens:
    """Tokens found in inbound mail go to the verification steps and to the health checks' probes."""

    async def on_tokens(tokens: list[str], message_id: int) -> None:
        await first(tokens, message_id)
        await second(tokens, message_id)

    return on_tokens


def relay_of(settings: Settings) -> SmtpServer | None:
    r = settings.relay
    return None if r is None else SmtpServer(r.host, r.port, r.security, r.username, r.password)


def oauth_provider(app: OAuthAppSettings) -> oauth.OAuthProvider:
    build = oauth.microsoft if app.provider == oauth.MICROSOFT else oauth.google
    return build(
        app.client_id,
        app.client_secret,
        authorize_url=app.authorize_url,
        token_url=app.token_url,
        jwks_url=app.jwks_url,
        smtp=(app.smtp.host, app.smtp.port),
    )


def gateway_endpoint(settings: Settings, bound_port: int | None = None) -> GatewayEndpoint:
    """Where mailers reach the gateway, for the credentials modal: SUBMISSION_PUBLIC_HOST (host, and port when
    given), else SUBMISSION_SMTP's host (the platform domain when it listens on every address) and the port it is
    bound to; STARTTLS when SUBMISSION_TLS_* are set."""
    listen = settings.submission_smtp
    host = settings.submission_public_host or listen.host
    if host in ("0.0.0.0", "::", ""):
        host = settings.platform_domain
    port = settings.submission_public_port or bound_port or listen.port
    tls = GatewayTls.STARTTLS if settings.submission_tls is not None else GatewayTls.NONE
    return GatewayEndpoint(host, port, tls)


def server_tls(files: tuple[Path, Path] | None) -> ssl.SSLContext | None:
    """A server-side TLS context for STARTTLS from (certificate, key) files."""
    if files is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*files)
    return context
