"""The composition root: the one place that sees models, services and handlers, and wires them together."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import text

import handlers
from bot.config import ConfigError, Settings
from bot.logs import library_logger, quiet_libraries
from bot.mail.delivery import Delivery
from bot.mail.gateway import SubmissionGateway
from bot.mail.inbound import InboundServer
from bot.mail.outbound import MailSender
from bot.services.credentials import GatewayCredentials
from bot.services.identities import IdentityService
from bot.services.incoming import IncomingMail
from bot.services.limits import LimitService
from bot.services.otp import OtpChallenges
from bot.services.registry import Services
from bot.services.secrets import SecretBox, load_or_create_keys
from bot.services.sending_limits import SendingLimits
from bot.services.verification import VerificationService
from handlers.managers import ManagerDirectory
from handlers.notifier import SlackNotifier
from models import Database, Identity, IdentityKind

log = logging.getLogger(__name__)


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


@dataclass
class Runtime:
    """Everything `identity-bot run` starts. `start()` then `stop()`; tests run it in-process."""

    settings: Settings
    db: Database = field(init=False)
    app: AsyncApp = field(init=False)
    services: Services = field(init=False)
    http_url: str | None = field(default=None, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _socket_handler: object | None = field(default=None, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    def build(self) -> None:
        s = self.settings
        quiet_libraries()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(s.database_url)
        client = build_slack_client(s)
        self.app = AsyncApp(
            client=client,
            signing_secret=s.slack_signing_secret or "unused-in-socket-mode",
            process_before_response=False,
            logger=library_logger("slack_bolt.identity_bot"),  # Bolt copies this level to its loggers
        )
        self.managers = ManagerDirectory(client, s.managers)
        notifier = SlackNotifier(client, self.managers, approvals_channel=s.approvals_channel)
        try:
            secrets = SecretBox(load_or_create_keys(s.secret_keys, s.data_dir))
        except ValueError as exc:
            raise ConfigError("SECRET_KEYS", f"not a valid Fernet key ({exc})") from None
        mail = MailSender(
            allow_private_hosts=s.smtp_allow_private_hosts, allowed_ports=s.smtp_allowed_ports, timeout=s.smtp_timeout
        )
        identities = IdentityService(
            self.db,
            notifier,
            secrets=secrets,
            mail=mail,
            platform_domain=s.platform_domain,
            tracking_domain=s.tracking_domain,
        )
        self.delivery = Delivery(
            mail,
            relay=s.relay,
            own_domains=(s.platform_domain, s.tracking_domain),
            inbound=self._inbound_address,
            outbox=s.data_dir / "outbox",
        )
        verification = VerificationService(
            self.db,
            notifier,
            identities,
            OtpChallenges(self.db, secrets),
            self.delivery,
            platform_sender=f"noreply@{s.platform_domain}",
            tracking_timeout=s.tracking_timeout,
        )
        self.window = SendingLimits(self.db)
        limits = LimitService(self.db, notifier, identities, self.window)
        self.services = Services(settings=s, identities=identities, verification=verification, limits=limits)
        self.incoming = IncomingMail(
            self.db,
            on_tokens=verification.on_tokens,
            forward=self._forward_lead,
            platform_domains=(s.platform_domain, s.tracking_domain),
        )
        self.inbound = InboundServer(self.db, identities, on_stored=self.incoming.process)
        tls = None
        if s.submission_tls is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(*s.submission_tls)
        self.gateway = SubmissionGateway(
            self.db, GatewayCredentials(self.db), self.window, relay=self._relay_as_identity, tls_context=tls
        )
        handlers.register(self.app, self.services, self.managers)

    def _inbound_address(self) -> tuple[str, int] | None:
        inbound = getattr(self, "inbound", None)
        return (inbound.host, inbound.port) if inbound is not None and inbound.port else None

    async def _forward_lead(self, identity: Identity, message: EmailMessage) -> None:
        """Leads go to the identity's response-forwarding address, from the platform."""
        await self.delivery.send_from_platform(
            message, sender=f"noreply@{self.settings.platform_domain}", recipients=[identity.forwarding_address]
        )

    async def _relay_as_identity(
        self, identity: Identity, message: EmailMessage, mail_from: str, recipients: list[str]
    ) -> None:
        """The gateway's relay: the customer's own server for company identities, else the platform relay."""
        identities = self.services.identities
        server = identities.smtp_server(identity) if identity.kind == IdentityKind.COMPANY.value else None
        await self.delivery.send_as(server, message, sender=mail_from, recipients=recipients)

    async def _sweep(self) -> None:
        """Fire tracking timeouts and retry inbound mail whose processing failed (e.g. the relay was down).
        Runs in every process; conditional updates and processing locks make each happen once."""
        interval = min(5.0, max(0.2, self.settings.tracking_timeout / 4))
        retry_every = max(1, int(30 / interval))
        rounds = 0
        while True:
            try:
                await self.services.verification.expire_tracking()
                rounds += 1
                if rounds % retry_every == 0:
                    await self.incoming.process_pending()
                    await self.services.limits.post_unposted()
            except Exception:
                log.exception("background sweep failed")
            await asyncio.sleep(interval)

    async def _check_tokens(self) -> None:
        """Refuse to start with a token Slack rejects (one line naming it, exit 2) instead of retrying forever.
        If Slack can't be reached at all, start anyway: it may be a passing network problem."""
        rejected = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "not_allowed_token_type"}
        checks = [("SLACK_BOT_TOKEN", self.app.client.auth_test())]
        if self.settings.socket_mode:
            checks.append(
                ("SLACK_APP_TOKEN", self.app.client.apps_connections_open(app_token=self.settings.slack_app_token))
            )
        for variable, call in checks:
            try:
                await call
            except SlackApiError as exc:
                error = exc.response.get("error")
                if error in rejected:
                    raise ConfigError(variable, f"Slack refused it ({error})") from None
                log.warning("could not check %s with Slack: %s", variable, error)
            except Exception as exc:  # unreachable: log, and let the runtime retry as it does
                log.warning("could not reach Slack to check %s: %s", variable, type(exc).__name__)

    async def start(self) -> None:
        self.build()
        await self._check_tokens()
        await self.db.upgrade()
        s = self.settings
        await self.inbound.start(s.inbound_smtp.host, s.inbound_smtp.port)
        log.info("inbound SMTP server on %s:%s", self.inbound.host, self.inbound.port)
        await self.gateway.start(s.submission_smtp.host, s.submission_smtp.port)
        if s.relay is None:
            log.warning(
                "RELAY_SMTP_URL is not set: mail to outside addresses (one-time passwords, response emails, "
                "forwarded leads) is written to %s instead of being delivered",
                s.data_dir / "outbox",
            )
        if not s.managers:
            log.warning("MANAGERS is not set: nobody can approve limit increases")
        self._tasks.append(asyncio.create_task(self._recover()))
        self._tasks.append(asyncio.create_task(self._sweep()))
        if self.settings.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            handler = AsyncSocketModeHandler(self.app, self.settings.slack_app_token)
            await handler.connect_async()
            self._socket_handler = handler
            log.info("connected to Slack in Socket Mode")
        await self._start_http()

    async def _start_http(self) -> None:
        web_app = web.Application()
        web_app.router.add_get("/healthz", self._healthz)
        if not self.settings.socket_mode:
            web_app.router.add_post("/slack/events", self._slack_events)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.http_url = f"http://{host}:{port}"
        routes = "GET /healthz" if self.settings.socket_mode else "POST /slack/events, GET /healthz"
        log.info("listening on %s (%s)", self.http_url, routes)

    async def _slack_events(self, request: web.Request) -> web.Response:
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _healthz(self, _request: web.Request) -> web.Response:
        try:
            async with self.db.session() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            log.exception("health check: database unreachable")
            return web.json_response({"ok": False, "database": "unreachable"}, status=503)
        return web.json_response({"ok": True})

    async def _recover(self) -> None:
        """Mail stored before a crash or restart is processed now: nothing accepted is lost."""
        try:
            count = await self.incoming.process_pending()
            if count:
                log.info("processed %d inbound message(s) left from before the restart", count)
        except Exception:
            log.exception("processing pending inbound mail failed")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for server in (getattr(self, "gateway", None), getattr(self, "inbound", None)):
            if server is not None:
                await server.stop()
        if self._socket_handler is not None:
            await self._socket_handler.close_async()  # type: ignore[attr-defined]
        if self._runner is not None:
            await self._runner.cleanup()
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


async def rotate_secrets(settings: Settings) -> int:
    """`identity-bot secrets rotate`: re-encrypt every stored password under the first key."""
    from bot.services.notifier import NullNotifier

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    try:
        await db.upgrade()
        secrets = SecretBox(load_or_create_keys(settings.secret_keys, settings.data_dir))
        service = IdentityService(
            db,
            NullNotifier(),
            secrets=secrets,
            mail=MailSender(),
            platform_domain=settings.platform_domain,
            tracking_domain=settings.tracking_domain,
        )
        return await service.rotate_secrets()
    finally:
        await db.dispose()
