"""Everything `identity-bot run` starts and stops: the Slack app and its listeners, the SMTP edges, the background
jobs, over the core (core.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass, field
from typing import cast

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

import handlers
from bot.app.core import Core, build_core
from bot.app.parts import (
    build_slack_client,
    key_problem,
    open_database,
    seen_requests_database,
    server_tls,
    signing_key_error,
)
from bot.config import Settings
from bot.door import DoorConfig, DoorProcess
from bot.jobs import Jobs
from bot.logs import library_logger, quiet_libraries
from bot.mail import oauth
from bot.mail.dkim import DkimKeyError, DkimSigner
from bot.mail.netguard import is_loopback
from bot.services.health import HealthScheduler
from bot.services.incoming import Drain, IncomingMail, JudgePool
from bot.services.notifier import Notifier
from bot.services.registry import Services
from bot.services.secrets import KeyMismatch, SecretBox, check_key
from bot.smtp.gateway import SubmissionGateway
from bot.web import SlackServer, check_tokens, sign_in_routes, unsubscribe_routes
from handlers.home import HomeAwareNotifier, HomeRefresh
from handlers.managers import SlackManagerDirectory
from handlers.notifier import SlackNotifier
from models import Database

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything `identity-bot run` starts. `start()` then `stop()`; tests run it in-process."""

    settings: Settings
    db: Database = field(init=False)
    seen_requests: Database = field(init=False)  # the replay guard's (parts.seen_requests_database)
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
        self.seen_requests = seen_requests_database(s, self.db)
        client = build_slack_client(s)
        self.app = AsyncApp(
            client=client,
            signing_secret=s.slack_signing_secret or "unused-in-socket-mode",
            process_before_response=False,
            logger=library_logger("slack_bolt.identity_bot"),  # Bolt copies this level to its loggers
        )
        self.managers = SlackManagerDirectory(client, s.managers)
        self.home = HomeRefresh(client)
        notifier = self._notifier(client)
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
            seen_requests=self.seen_requests,
        )
        self.services = core.services
        self.home.bind(core.services)
        self.oauth_http = core.oauth_http
        self.secrets = core.secrets
        self.signer = core.signer
        self.incoming = core.incoming
        self.drain = core.drain
        self.inbound = self._door(core)
        self.drain.busy = self.inbound.busy  # accepting first: processing trickles while sessions are open
        self.gateway = SubmissionGateway(core.submission, tls_context=server_tls(s.submission_tls))
        self.jobs = self._jobs(core)
        self.slack = SlackServer(
            self.app,
            host=s.host,
            port=s.port,
            app_token=s.slack_app_token,
            healthy=self.db.ping,
            routes=sign_in_routes(core.services.sign_in) + unsubscribe_routes(core.unsubscribes),
        )
        handlers.register(self.app, self.services, self.home)

    def _notifier(self, client: AsyncWebClient) -> Notifier:
        """The Slack side of the Notifier port; every event about an identity also refreshes its team's Home tabs."""
        s = self.settings
        slack = SlackNotifier(
            client,
            self.managers,
            approvals_channel=s.approvals_channel,
            platform_domain=s.platform_domain,
            ops_channel=s.ops_channel,
            health_mention=s.health_mention,
        )
        return cast(Notifier, HomeAwareNotifier(slack, self.home))

    def _door(self, core: Core) -> DoorProcess:
        """The inbound server runs in its own process (bot/door.py): a flood of mail never delays Slack's acks."""
        s = self.settings
        tls = s.inbound_tls
        config = DoorConfig(
            database_url=s.database_url,
            platform_domain=s.platform_domain,
            tracking_domain=s.tracking_domain,
            host=s.inbound_smtp.host,
            port=s.inbound_smtp.port,
            tls_cert=str(tls[0]) if tls else None,
            tls_key=str(tls[1]) if tls else None,
            log_level=s.log_level,
        )
        return DoorProcess(config, on_stored=core.drain.notify)

    def _jobs(self, core: Core) -> Jobs:
        s = self.settings
        return Jobs(
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
        await self.services.replay.prepare()
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
        if getattr(self, "seen_requests", None) is not None and self.seen_requests is not self.db:
            await self.seen_requests.dispose()
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
