"""The composition root: the only place that reads Settings and constructs the world — the database, the services,
the Slack app and its listeners, the SMTP edges and the background jobs — and wires them together.

`Runtime` is what `identity-bot run` serves (tests run it in-process); `offline` gives the CLI's maintenance
commands the same database and services without Slack."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

import handlers
from bot.config import ConfigError, OAuthAppSettings, Settings
from bot.door import DoorConfig, DoorProcess
from bot.files import secure_data
from bot.jobs import Jobs
from bot.logs import library_logger, quiet_libraries
from bot.mail import oauth
from bot.mail.delivery import Delivery, InboundAddress
from bot.mail.dkim import DkimKeyError, DkimSigner
from bot.mail.domains import PlatformDomains
from bot.mail.netguard import is_loopback
from bot.mail.outbound import MailSender, SmtpServer
from bot.services.gateway import (
    DeliveryReports,
    Dispatcher,
    GatewayCredentials,
    IdentityRelay,
    SendingLimits,
    Submission,
    Unsubscribes,
)
from bot.services.gateway.access import GatewayEndpoint, GatewayTls, SmtpAccess
from bot.services.gateway.notices import LimitNotices
from bot.services.health import DomainSettings, HealthChecks, HealthScheduler, HealthService
from bot.services.home import HomeService
from bot.services.identities import IdentityService
from bot.services.identities.grants import MailboxGrants
from bot.services.identities.lifecycle import IdentityLifecycleService
from bot.services.identities.sign_in import MailboxSignIn
from bot.services.incoming import Drain, InboundStore, IncomingMail, JudgePool, LeadForwarder
from bot.services.incoming.pipeline import Judge, OnTokens
from bot.services.limits import LimitService
from bot.services.limits.time_boxes import TimeBoxes
from bot.services.notifier import Notifier
from bot.services.policy import ManagerDirectory, Policy
from bot.services.registry import Services
from bot.services.replay import ReplayGuard
from bot.services.secrets import KeyMismatch, SecretBox, check_key, load_or_create_keys
from bot.services.verification import OtpChallenges, VerificationService
from bot.smtp.gateway import SubmissionGateway
from bot.web import SlackServer, check_tokens, sign_in_routes, unsubscribe_routes
from handlers.home import HomeAwareNotifier, HomeRefresh
from handlers.managers import SlackManagerDirectory
from handlers.notifier import SlackNotifier
from models import Database

log = logging.getLogger(__name__)

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


@dataclass
class Core:
    """The services and what sits between them and the edges (mail delivery, incoming mail)."""

    services: Services
    secrets: SecretBox
    delivery: Delivery
    incoming: IncomingMail
    store: InboundStore
    submission: Submission
    oauth_http: oauth.OAuthHttp
    unsubscribes: Unsubscribes
    signer: DkimSigner
    drain: Drain


def build_core(
    settings: Settings,
    db: Database,
    notifier: Notifier,
    managers: ManagerDirectory,
    *,
    inbound_address: InboundAddress = lambda: None,
    judge: Judge | None = None,
    gateway_port: Callable[[], int | None] = lambda: None,
) -> Core:
    s = settings
    domains = domains_of(s)
    secrets = secret_box(s)
    policy = Policy(managers)
    mail = MailSender(
        allow_private_hosts=s.smtp_allow_private_hosts, allowed_ports=s.smtp_allowed_ports, timeout=s.smtp_timeout
    )
    delivery = Delivery(mail, relay=relay_of(s), domains=domains, inbound=inbound_address, outbox=s.data_dir / "outbox")
    oauth_http = oauth.OAuthHttp()
    providers = {app.provider: oauth_provider(app) for app in s.oauth_apps}
    grants = MailboxGrants(db, secrets, providers, oauth_http)
    identities = IdentityService(db, notifier, policy, secrets=secrets, mail=mail, domains=domains, grants=grants)
    verification = VerificationService(
        db,
        notifier,
        identities,
        OtpChallenges(db, secrets),
        delivery,
        domains,
        policy=policy,
        tracking_timeout=s.tracking_timeout,
    )
    window = SendingLimits(db)
    credentials = GatewayCredentials(db, secrets)
    signer = dkim_signer(s)
    health = HealthService(
        db,
        notifier,
        identities,
        verification,
        delivery,
        domains,
        checks=HealthChecks(identities, domain_settings(s, signer)),
        policy=policy,
        tracking_timeout=s.tracking_timeout,
        interval=s.health_interval,
    )
    notices = LimitNotices(db, notifier)
    services = Services(
        domains=domains,
        policy=policy,
        identities=identities,
        verification=verification,
        limits=LimitService(db, notifier, policy),
        window=window,
        credentials=credentials,
        sign_in=MailboxSignIn(db, secrets, grants, notifier, public_url=s.public_url),
        replay=ReplayGuard(db),
        health=health,
        lifecycle=IdentityLifecycleService(db, notifier, policy),
        time_boxes=TimeBoxes(db, notifier, policy),
        notices=notices,
        access=SmtpAccess(identities, credentials, policy, lambda: gateway_endpoint(s, gateway_port())),
        home=HomeService(db, policy),
    )
    unsubscribes = Unsubscribes(db)
    incoming = IncomingMail(
        db,
        domains,
        on_tokens=both(verification.on_tokens, health.on_tokens),
        on_reports=health.rates_changed,
        forward=LeadForwarder(delivery, domains),
        notifier=notifier,
        judge=judge,
        unsubscribes=unsubscribes,
    )
    drain = Drain(incoming)
    store = InboundStore(db, domains, on_stored=drain.notify, unsubscribes=unsubscribes)
    dispatcher = Dispatcher(
        IdentityRelay(delivery, identities),
        domains,
        unsubscribes=unsubscribes,
        signer=signer,
        public_url=s.public_url,
    )
    submission = Submission(
        db, credentials, window, dispatcher, reports=DeliveryReports(delivery, domains), notices=notices
    )
    return Core(services, secrets, delivery, incoming, store, submission, oauth_http, unsubscribes, signer, drain)


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


@dataclass
class Runtime:
    """Everything `identity-bot run` starts. `start()` then `stop()`; tests run it in-process."""

    settings: Settings
    db: Database = field(init=False)
    app: AsyncApp = field(init=False)
    services: Services = field(init=False)
    secrets: SecretBox = field(init=False)
    managers: SlackManagerDirectory = field(init=False)
    incoming: IncomingMail = field(init=False)
    drain: Drain = field(init=False)
    judges: JudgePool = field(init=False)
    inbound: DoorProcess = field(init=False)
    gateway: SubmissionGateway = field(init=False)
    slack: SlackServer = field(init=False)
    jobs: Jobs = field(init=False)
    oauth_http: oauth.OAuthHttp = field(init=False)
    signer: DkimSigner = field(init=False)
    home: HomeRefresh = field(init=False)

    @property
    def http_url(self) -> str | None:
        slack = getattr(self, "slack", None)
        return slack.url if slack is not None else None

    def build(self) -> None:
        s = self.settings
        quiet_libraries()
        self.db = open_database(s)
        client = build_slack_client(s)
        self.app = AsyncApp(
            client=client,
            signing_secret=s.slack_signing_secret or "unused-in-socket-mode",
            process_before_response=False,
            logger=library_logger("slack_bolt.identity_bot"),  # Bolt copies this level to its loggers
        )
        self.managers = SlackManagerDirectory(client, s.managers)
        self.home = HomeRefresh(client)
        # Every event about an identity also refreshes its team's Home tabs.
        notifier = cast(
            Notifier,
            HomeAwareNotifier(
                SlackNotifier(
                    client,
                    self.managers,
                    approvals_channel=s.approvals_channel,
                    platform_domain=s.platform_domain,
                    ops_channel=s.ops_channel,
                    health_mention=s.health_mention,
                ),
                self.home,
            ),
        )
        # Judging untrusted mail runs in one worker process: on 2 cores the event loop keeps the other.
        self.judges = JudgePool(1)
        core = build_core(
            s,
            self.db,
            notifier,
            self.managers,
            inbound_address=self._inbound_address,
            judge=self.judges,
            gateway_port=lambda: self.gateway.port or None,
        )
        self.services = core.services
        self.home.bind(core.services)
        self.oauth_http = core.oauth_http
        self.secrets = core.secrets
        self.signer = core.signer
        self.incoming = core.incoming
        self.drain = core.drain
        # The inbound server runs in its own process (bot/door.py): a flood of mail never delays Slack's acks.
        tls = s.inbound_tls
        self.inbound = DoorProcess(
            DoorConfig(
                database_url=s.database_url,
                platform_domain=s.platform_domain,
                tracking_domain=s.tracking_domain,
                host=s.inbound_smtp.host,
                port=s.inbound_smtp.port,
                tls_cert=str(tls[0]) if tls else None,
                tls_key=str(tls[1]) if tls else None,
                log_level=s.log_level,
            ),
            on_stored=core.drain.notify,
        )
        self.drain.busy = self.inbound.busy  # accepting first: processing trickles while sessions are open
        self.gateway = SubmissionGateway(core.submission, tls_context=server_tls(s.submission_tls))
        self.jobs = Jobs(
            core.services.verification,
            core.incoming,
            core.services.limits,
            tracking_timeout=s.tracking_timeout,
            sign_in=core.services.sign_in,
            drain=core.drain,
            health=HealthScheduler(
                core.services.health, interval=s.health_interval, tracking_timeout=s.tracking_timeout
            ),
            time_boxes=core.services.time_boxes,
            lifecycle=core.services.lifecycle,
        )
        self.slack = SlackServer(
            self.app,
            host=s.host,
            port=s.port,
            app_token=s.slack_app_token,
            healthy=self.db.ping,
            routes=sign_in_routes(core.services.sign_in) + unsubscribe_routes(core.unsubscribes),
        )
        handlers.register(self.app, self.services, self.home)

    def _inbound_address(self) -> tuple[str, int] | None:
        inbound = getattr(self, "inbound", None)
        return (inbound.host, inbound.port) if inbound is not None and inbound.port else None

    async def start(self) -> None:
        self.build()
        s = self.settings
        await self.inbound.spawn()  # starts while the rest starts up
        await check_tokens(self.app, s.slack_app_token)
        if s.dkim_private_key is not None:  # a configured key must work now; a generated one is made on first use
            try:
                await asyncio.to_thread(self.signer.key)
            except DkimKeyError as exc:
                raise signing_key_error(exc, s) from None
        await self.db.upgrade()
        try:
            await check_key(self.db, self.secrets)
        except KeyMismatch as exc:
            raise key_problem(s, exc) from None
        await self.inbound.wait_ready()
        log.info("inbound SMTP server on %s:%s", self.inbound.host, self.inbound.port)
        if s.inbound_tls is None and not is_loopback(s.inbound_smtp.host):
            log.warning(
                "INBOUND_SMTP listens on %s without INBOUND_TLS_CERT/INBOUND_TLS_KEY: no STARTTLS is offered, and "
                "the big mailbox providers mark mail to an MX without it insecure (fine if a front MX terminates TLS)",
                s.inbound_smtp.host,
            )
        if not s.ops_channel:
            log.info("OPS_CHANNEL is not set: operator notices (postmaster@ mail, parked messages) go to the log only")
        await self.gateway.start(s.submission_smtp.host, s.submission_smtp.port)
        if s.relay is None:
            log.warning(
                "RELAY_SMTP_URL is not set: mail to outside addresses (one-time passwords, response emails, "
                "forwarded leads) is written to %s instead of being delivered",
                s.data_dir / "outbox",
            )
        if not s.managers:
            log.warning("MANAGERS is not set: nobody can approve limit increases")
        for app in s.oauth_apps:
            log.info("Sign in with %s is offered; redirect URI %s/oauth/callback", app.provider, s.public_url)
        self.jobs.start()
        await self.slack.start()
        # Everything built so far lives as long as the process: keep it out of the garbage collector's full passes,
        # which otherwise walk every module and object graph and stall the event loop (acks, SMTP) for tens of ms.
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        if getattr(self, "jobs", None) is not None:
            await self.jobs.stop()
        for server in (getattr(self, "gateway", None), getattr(self, "inbound", None)):
            if server is not None:
                await server.stop()
        if getattr(self, "home", None) is not None:
            await self.home.stop()  # after the gateway drained: what it reported publishes nothing now
        if getattr(self, "judges", None) is not None:
            await self.judges.close()
        if getattr(self, "slack", None) is not None:
            await self.slack.stop()
        if getattr(self, "oauth_http", None) is not None:
            await self.oauth_http.close()
        if getattr(self, "signer", None) is not None:
            self.signer.close()
        if getattr(self, "db", None) is not None:
            await self.db.dispose()


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM."""
    runtime = Runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.start()
        await stop.wait()
    finally:
        await runtime.stop()
