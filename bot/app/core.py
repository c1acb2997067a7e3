"""The services and what sits between them and the edges (mail delivery, incoming mail), built from Settings: what
`identity-bot run` serves and what the maintenance commands use without Slack."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.app.parts import (
    both,
    dkim_signer,
    domain_settings,
    domains_of,
    gateway_endpoint,
    oauth_provider,
    relay_of,
    secret_box,
)
from bot.config import Settings
from bot.mail import oauth
from bot.mail.delivery import Delivery, InboundAddress
from bot.mail.dkim import DkimSigner
from bot.mail.outbound import MailSender
from bot.services.gateway import (
    DeliveryReports,
    Dispatcher,
    GatewayCredentials,
    IdentityRelay,
    SendingLimits,
    Submission,
    Unsubscribes,
)
from bot.services.gateway.access import SmtpAccess
from bot.services.gateway.notices import LimitNotices
from bot.services.health import HealthChecks, HealthService
from bot.services.home import HomeService
from bot.services.identities import IdentityService
from bot.services.identities.grants import MailboxGrants
from bot.services.identities.lifecycle import IdentityLifecycleService
from bot.services.identities.sign_in import MailboxSignIn
from bot.services.incoming import Drain, InboundStore, IncomingMail, LeadForwarder
from bot.services.incoming.pipeline import Judge
from bot.services.limits import LimitService
from bot.services.limits.time_boxes import TimeBoxes
from bot.services.notifier import Notifier
from bot.services.policy import ManagerDirectory, Policy
from bot.services.registry import Services
from bot.services.replay import ReplayGuard
from bot.services.secrets import SecretBox
from bot.services.verification import OtpChallenges, VerificationService
from models import Database


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
    seen_requests: Database | None = None,
) -> Core:
    """Every service and mail path; `seen_requests` is the replay guard's database (parts.seen_requests_database),
    the main one when not given."""
    s = settings
    secrets = secret_box(s)
    mail = MailSender(
        allow_private_hosts=s.smtp_allow_private_hosts, allowed_ports=s.smtp_allowed_ports, timeout=s.smtp_timeout
    )
    delivery = Delivery(
        mail, relay=relay_of(s), domains=domains_of(s), inbound=inbound_address, outbox=s.data_dir / "outbox"
    )
    oauth_http = oauth.OAuthHttp()
    signer = dkim_signer(s)
    policy = Policy(managers)
    replay = ReplayGuard(seen_requests or db)
    services = _services(s, db, notifier, policy, secrets, mail, delivery, oauth_http, signer, gateway_port, replay)
    incoming, drain, store, submission, unsubscribes = _mail_paths(s, db, notifier, services, delivery, signer, judge)
    return Core(services, secrets, delivery, incoming, store, submission, oauth_http, unsubscribes, signer, drain)


def _services(
    settings: Settings,
    db: Database,
    notifier: Notifier,
    policy: Policy,
    secrets: SecretBox,
    mail: MailSender,
    delivery: Delivery,
    oauth_http: oauth.OAuthHttp,
    signer: DkimSigner,
    gateway_port: Callable[[], int | None],
    replay: ReplayGuard,
) -> Services:
    """One instance of each feature's service, wired to the others it needs."""
    s = settings
    domains = delivery.domains
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
    return Services(
        domains=domains,
        policy=policy,
        identities=identities,
        verification=verification,
        limits=LimitService(db, notifier, policy),
        window=window,
        credentials=credentials,
        sign_in=MailboxSignIn(db, secrets, grants, notifier, public_url=s.public_url),
        replay=replay,
        health=health,
        lifecycle=IdentityLifecycleService(db, notifier, policy),
        time_boxes=TimeBoxes(db, notifier, policy),
        notices=notices,
        access=SmtpAccess(identities, credentials, policy, lambda: gateway_endpoint(s, gateway_port())),
        home=HomeService(db, policy),
    )


def _mail_paths(
    settings: Settings,
    db: Database,
    notifier: Notifier,
    services: Services,
    delivery: Delivery,
    signer: DkimSigner,
    judge: Judge | None,
) -> tuple[IncomingMail, Drain, InboundStore, Submission, Unsubscribes]:
    """Mail through the product: inbound mail stored, processed (verification tokens, health probes, reports) and
    forwarded; submitted mail checked against the limits and sent on (DKIM-signed, with unsubscribe links)."""
    domains = services.domains
    unsubscribes = Unsubscribes(db)
    incoming = IncomingMail(
        db,
        domains,
        on_tokens=both(services.verification.on_tokens, services.health.on_tokens),
        on_reports=services.health.rates_changed,
        forward=LeadForwarder(delivery, domains),
        notifier=notifier,
        judge=judge,
        unsubscribes=unsubscribes,
    )
    drain = Drain(incoming)
    store = InboundStore(db, domains, on_stored=drain.notify, unsubscribes=unsubscribes)
    dispatcher = Dispatcher(
        IdentityRelay(delivery, services.identities),
        domains,
        unsubscribes=unsubscribes,
        signer=signer,
        public_url=settings.public_url,
    )
    reports = DeliveryReports(delivery, domains)
    submission = Submission(
        db, services.credentials, services.window, dispatcher, reports=reports, notices=services.notices
    )
    return incoming, drain, store, submission, unsubscribes
