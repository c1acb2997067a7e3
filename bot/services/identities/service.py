"""Email identities: create, edit, find; where an identity's panel lives; which server sends as it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mail.domains import PlatformDomains
from bot.mail.outbound import MailSender, SetupCheck, SmtpServer
from bot.services import audit
from bot.services.errors import FormErrors, NotFound
from bot.services.identities.addresses import suggest_address
from bot.services.identities.drafts import Created, IdentityDraft, SmtpDraft, Updated
from bot.services.identities.forms import IdentityForms
from bot.services.identities.grants import MailboxGrants
from bot.services.identities.lifecycle import not_deleted, release_expired_holds
from bot.services.identities.providers import PROVIDERS
from bot.services.identities.readiness import reset_steps
from bot.services.identities.signed_in import SignedInDraft, SignedInForms
from bot.services.limits.requests import open_request
from bot.services.limits.rules import needs_approval
from bot.services.notifier import Notifier, Posted
from bot.services.policy import IdentityAction, Policy
from bot.services.secrets import SecretBox
from models import (
    Database,
    Identity,
    IdentityKind,
    IdentityLifecycle,
    IdentityStatus,
    LimitRequest,
    SmtpSecurity,
    StepName,
)
from models.base import utcnow
from models.tables import DEFAULT_DAILY_LIMIT, DEFAULT_HOURLY_LIMIT

# Where the identity's mail goes: changing any of these voids Sending and Tracking. A new password or a new sign-in
# for the same server and username does not: saving it needs a passing Test email setup of exactly these settings
# (a real message sent as the identity), and the mailbox and its forwarder are the same. This is how an identity
# whose app password was revoked (the health checks say so) is fixed without being taken out of service.
SERVER_FIELDS = frozenset({"smtp_host", "smtp_port", "smtp_security", "smtp_username"})


class IdentityService:
    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        policy: Policy,
        *,
        secrets: SecretBox,
        mail: MailSender,
        domains: PlatformDomains,
        grants: MailboxGrants | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.policy = policy
        self.secrets = secrets
        self.domains = domains
        self.mail = mail
        self.grants = grants  # "Sign in with Microsoft / Google" (None: only passwords)
        self.signed_in = SignedInForms(grants, secrets, mail) if grants is not None else None
        self.forms = IdentityForms(db, domains, secrets, mail, self.signed_in)
        self.clock = clock

    # ---- the form ------------------------------------------------------------------------------------------
    async def suggest_address(self, display_name: str | None) -> str:
        """A free platform-domain address derived from the display name (Auto create)."""
        return await suggest_address(self.db, self.domains, display_name)

    def new_tracking_address(self) -> str:
        return self.domains.new_tracking_address()

    async def test_setup(
        self, draft: IdentityDraft, *, stored: Identity | None = None, actor: str | None = None
    ) -> tuple[SetupCheck, str | None]:
        """*Test email setup*: a real SMTP session; (result, fingerprint of the settings when it passed). Testing
        an edit of a stored identity (which may use its saved password) is for those who may edit it: raises
        NotPermitted otherwise."""
        if stored is not None:
            await self.policy.require(actor or "", stored, IdentityAction.EDIT)
        return await self.forms.test_setup(draft, stored=stored)

    def keeps_password(self, stored: Identity, draft: IdentityDraft) -> bool:
        """Whether an empty password field in an edit of `stored` may mean "keep the saved password": only while
        host, port, security and username are those it was saved with."""
        return stored.kind != IdentityKind.COMPANY or self.forms.same_server(stored, draft)

    # ---- create ----------------------------------------------------------------------------------------------
    async def create(self, draft: IdentityDraft, *, actor: str, team_id: str, view_id: str | None) -> Created:
        """Validate and store a new identity. Limits above the defaults become a pending increase request
        while the identity runs on the defaults. The same view submitted twice creates one identity.
        Raises FormErrors (field -> message) and stores nothing when the input is not acceptable."""
        if view_id and (existing := await self._created_from(view_id)):
            return existing
        clean, errors = await self.forms.validate(draft)
        if errors:
            # A copy of this submission may have been saved while we validated ("address taken" by ourselves).
            if view_id and (existing := await self._created_from(view_id)):
                return existing
            raise FormErrors(errors)
        hourly, daily = int(clean["hourly_limit"]), int(clean["daily_limit"])  # type: ignore[call-overload]
        wants_increase = needs_approval(hourly, daily)
        now = self.clock()
        identity = self._new_identity(draft, clean, actor=actor, team_id=team_id, view_id=view_id, now=now)
        signed = clean.get("sign_in")
        request: LimitRequest | None = None
        try:
            async with self.db.transaction() as session:
                await release_expired_holds(session, now, identity.address)  # a deleted identity's, held no more
                session.add(identity)
                await session.flush()
                if isinstance(signed, SignedInDraft) and not await MailboxGrants.attach(
                    session, signed.grant.id, identity.id
                ):
                    raise FormErrors({"sign_in": "The sign-in was removed meanwhile: sign in again."})
                audit.record(
                    session, actor=actor, action="identity.created", identity_id=identity.id, **describe(identity)
                )
                if wants_increase:
                    request = await open_request(
                        session,
                        identity,
                        actor=actor,
                        hourly=hourly,
                        daily=daily,
                        reason="Requested when the identity was created.",
                        now=now,
                    )
        except IntegrityError as exc:
            # Lost a race: either the same view was submitted twice at once, or someone took the address.
            if view_id and (existing := await self._created_from(view_id)):
                return existing
            raise FormErrors({"address": f"{identity.address} was just taken."}) from exc
        return Created(identity, request)

    def _new_identity(
        self,
        draft: IdentityDraft,
        clean: dict[str, object],
        *,
        actor: str,
        team_id: str,
        view_id: str | None,
        now: datetime,
    ) -> Identity:
        """The row of a validated form; limits above the defaults start on the defaults (an increase is requested)."""
        hourly, daily = int(clean["hourly_limit"]), int(clean["daily_limit"])  # type: ignore[call-overload]
        wants_increase = needs_approval(hourly, daily)
        identity = Identity(
            team_id=team_id,
            kind=IdentityKind(draft.kind),
            display_name=str(clean["display_name"]),
            company_name=str(clean["company_name"]),
            address=str(clean["address"]),
            hourly_limit=DEFAULT_HOURLY_LIMIT if wants_increase else hourly,
            daily_limit=DEFAULT_DAILY_LIMIT if wants_increase else daily,
            forwarding_address=str(clean["forwarding_address"]),
            notices_channel=str(clean["notices_channel"]),
            created_by=actor,
            created_from_view=view_id,
            created_at=now,
            updated_at=now,
        )
        smtp, signed = clean.get("smtp"), clean.get("sign_in")
        if isinstance(smtp, SmtpDraft):
            self._apply_smtp(identity, smtp, draft.esp_provider)
        if isinstance(signed, SignedInDraft):
            self._apply_sign_in(identity, signed)
        if identity.kind == IdentityKind.COMPANY:
            identity.tracking_address = str(clean["tracking_address"])
        return identity

    def _apply_smtp(self, identity: Identity, smtp: SmtpDraft, provider: str | None) -> None:
        identity.esp_provider = provider if provider in PROVIDERS else "other"
        identity.smtp_host, identity.smtp_port, identity.smtp_security = smtp.host, smtp.port, smtp.security
        identity.smtp_username = smtp.username
        identity.smtp_password_encrypted = self.secrets.encrypt(smtp.password)

    def _apply_sign_in(self, identity: Identity, signed: SignedInDraft) -> None:
        """Signed in with Microsoft/Google: the provider's own server, the mailbox as username, no password."""
        assert self.signed_in is not None
        server = self.signed_in.server(signed.grant)
        identity.esp_provider = signed.grant.provider
        identity.smtp_host, identity.smtp_port = server.host, server.port
        identity.smtp_security = SmtpSecurity(server.security)
        identity.smtp_username = identity.address
        identity.smtp_password_encrypted = None

    async def _created_from(self, view_id: str) -> Created | None:
        async with self.db.session() as session:
            identity = await session.scalar(select(Identity).where(Identity.created_from_view == view_id))
            if identity is None:
                return None
            request = await session.scalar(
                select(LimitRequest).where(LimitRequest.identity_id == identity.id).order_by(LimitRequest.id)
            )
            return Created(identity, request, duplicate=True)

    async def announce(self, created: Created) -> None:
        """Post the identity's panel to its channel. Separate from create() so Slack gets its ack first."""
        where = await self.notifier.identity_created(created.identity, created.limit_request)
        if where is not None:
            await self.remember_panel(created.identity, where)

    # ---- the panel -------------------------------------------------------------------------------------------
    async def remember_panel(self, identity: Identity, where: Posted) -> None:
        """This message is the identity's panel from now on: step changes update it in place."""
        if (identity.panel_channel, identity.panel_ts) == where:
            return
        async with self.db.transaction() as session:
            await session.execute(
                update(Identity).where(Identity.id == identity.id).values(panel_channel=where[0], panel_ts=where[1])
            )
        identity.panel_channel, identity.panel_ts = where

    # ---- edit ------------------------------------------------------------------------------------------------
    async def update(self, identity_id: int, draft: IdentityDraft, *, actor: str) -> Updated:
        """Apply an edit. Raises FormErrors (nothing stored) or NotAllowed. Limits are changed elsewhere
        (they may need a manager), and the address can't change."""
        stored = await self.get(identity_id)
        await self.policy.require(actor, stored, IdentityAction.EDIT)
        draft.kind = stored.kind
        clean, errors = await self.forms.validate(draft, stored=stored)
        if errors:
            raise FormErrors(errors)
        async with self.db.transaction() as session:
            identity = await session.get(Identity, identity_id, with_for_update=True)
            if identity is None:
                raise NotFound("This identity no longer exists.")
            before = describe(identity)
            identity.display_name = str(clean["display_name"])
            identity.company_name = str(clean["company_name"])
            identity.forwarding_address = str(clean["forwarding_address"])
            identity.notices_channel = str(clean["notices_channel"])
            smtp, signed = clean.get("smtp"), clean.get("sign_in")
            password_changed = False
            if isinstance(smtp, SmtpDraft):
                encrypted = identity.smtp_password_encrypted
                password_changed = (self.secrets.decrypt(encrypted) if encrypted else None) != smtp.password
                self._apply_smtp(identity, smtp, draft.esp_provider or identity.esp_provider)
                await MailboxGrants.detach(session, identity.id)
            signed_in_anew = isinstance(signed, SignedInDraft) and signed.new
            if isinstance(signed, SignedInDraft):
                self._apply_sign_in(identity, signed)
                if signed.new and not await MailboxGrants.attach(session, signed.grant.id, identity.id):
                    raise FormErrors({"sign_in": "The sign-in was removed meanwhile: sign in again."})
            identity.updated_at = self.clock()
            after = describe(identity)
            changed = [k for k in after if before.get(k) != after[k] and k != "password"]
            if password_changed:
                changed.append("password")
            if signed_in_anew:
                changed.append("sign_in")
            detail: dict[str, object] = {
                k: {"from": before.get(k), "to": after[k]} for k in changed if k not in ("password", "sign_in")
            }
            if password_changed:
                detail["password"] = "password changed"
            if signed_in_anew:
                detail["sign_in"] = f"signed in with {draft.esp_provider or identity.esp_provider}"
            audit.record(session, actor=actor, action="identity.updated", identity_id=identity.id, changes=detail)
            result = Updated(
                identity=identity,
                changed=changed,
                smtp_changed=bool(SERVER_FIELDS & set(changed)),
                forwarding_changed="forwarding_address" in changed,
            )
            await self._void_checks(session, result, actor)
        return result

    async def _void_checks(self, session: AsyncSession, result: Updated, actor: str) -> None:
        """Changed settings void the checks that proved them, in the edit's own transaction: the identity can't
        stay "ready" (and keep sending through the gateway) on settings nobody verified."""
        reasons = []
        if result.smtp_changed:
            result.reset_steps += [StepName.SENDING, StepName.TRACKING]
            reasons.append("the SMTP settings changed")
        if result.forwarding_changed:
            result.reset_steps.append(StepName.RECEIVING)
            reasons.append("the response forwarding address changed")
        if not result.reset_steps:
            return
        identity = result.identity
        result.reset_reason = " and ".join(reasons)
        await reset_steps(session, identity.id, result.reset_steps, reason=result.reset_reason, now=identity.updated_at)
        identity.status = IdentityStatus.NOT_VERIFIED
        audit.record(
            session,
            actor=actor,
            action="verification.reset",
            identity_id=identity.id,
            steps=[s.value for s in result.reset_steps],
            reason=result.reset_reason,
        )

    async def announce_update(self, updated: Updated, *, actor: str) -> None:
        await self.notifier.identity_updated(updated.identity, updated.changed, actor)

    async def forget_sign_in(self, slack_user_id: str, view_id: str) -> None:
        """ "Use a password instead": drop the sign-in made in this modal (the saved identity is not touched)."""
        if self.grants is not None:
            await self.grants.forget_form(slack_user_id, view_id)

    async def signed_in_mailbox(self, identity: Identity) -> str | None:
        """The mailbox a company identity is signed in as (Microsoft/Google), None when it uses a password."""
        if self.grants is None or identity.kind != IdentityKind.COMPANY or identity.smtp_password_encrypted:
            return None
        grant = await self.grants.for_identity(identity.id)
        return grant.mailbox if grant is not None else None

    async def check_login(self, identity: Identity) -> SetupCheck:
        """Can the identity still log in to its server? A real session up to MAIL FROM, nothing sent. For a
        signed-in identity whose grant was revoked the diagnosis is SIGN_IN_AGAIN (bot/mail/sign_in_diagnosis.py):
        what the scheduled re-check reports as "needs attention" with a Sign in again button."""
        try:
            server = await self.sending_server(identity)
        except NotFound as exc:
            return SetupCheck(ok=False, message=str(exc), diagnosis=None)
        if server is None:
            return SetupCheck(ok=True, message="", diagnosis=None)
        return await self.mail.check_setup(server, sender=identity.address)

    # ---- read ------------------------------------------------------------------------------------------------
    async def get(self, identity_id: int) -> Identity:
        async with self.db.session() as session:
            identity = await session.get(Identity, identity_id)
        if identity is None or identity.lifecycle == IdentityLifecycle.DELETED:
            raise NotFound("This identity no longer exists.")
        return identity

    async def list_for_team(self, team_id: str) -> list[Identity]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(Identity)
                .where(Identity.team_id == team_id, not_deleted())
                .order_by(Identity.created_at, Identity.id)
            )
            return list(rows.all())

    async def get_by_address(self, team_id: str, address: str) -> Identity:
        wanted = address.strip().strip("<>").lower()
        if wanted.startswith("mailto:"):
            wanted = wanted[len("mailto:") :]
        wanted = wanted.split("|", 1)[0]  # Slack turns typed addresses into <mailto:x|x>
        async with self.db.session() as session:
            identity = await session.scalar(
                select(Identity).where(Identity.team_id == team_id, Identity.address == wanted, not_deleted())
            )
        if identity is None:
            raise NotFound(f"No identity with the address {wanted} in this workspace.")
        return identity

    async def sending_server(self, identity: Identity) -> SmtpServer | None:
        """The server that sends as this identity: the customer's own (password decrypted for this use only, or
        the provider's with the mailbox's access token when signed in with Microsoft/Google) for a company
        identity, None for a platform identity (the platform relay sends for it)."""
        if identity.kind != IdentityKind.COMPANY:
            return None
        if not identity.smtp_password_encrypted and self.grants is not None and self.signed_in is not None:
            grant = await self.grants.for_identity(identity.id)
            if grant is not None:
                try:
                    return self.signed_in.server(grant)
                except LookupError:
                    raise NotFound(f"Sign in with {grant.provider.title()} is not configured any more.") from None
        if not (identity.smtp_host and identity.smtp_port and identity.smtp_password_encrypted):
            raise NotFound("This identity has no SMTP settings.")
        return SmtpServer(
            identity.smtp_host,
            identity.smtp_port,
            identity.smtp_security or "starttls",
            identity.smtp_username or identity.address,
            self.secrets.decrypt(identity.smtp_password_encrypted),
        )


def describe(identity: Identity) -> dict[str, object]:
    """What the audit trail records of an identity: everything but the password."""
    fields: dict[str, object] = {
        "kind": identity.kind,
        "display_name": identity.display_name,
        "company_name": identity.company_name,
        "address": identity.address,
        "hourly_limit": identity.hourly_limit,
        "daily_limit": identity.daily_limit,
        "forwarding_address": identity.forwarding_address,
        "notices_channel": identity.notices_channel,
    }
    if identity.kind == IdentityKind.COMPANY:
        fields.update(
            esp_provider=identity.esp_provider,
            smtp_host=identity.smtp_host,
            smtp_port=identity.smtp_port,
            smtp_security=identity.smtp_security,
            smtp_username=identity.smtp_username,
            tracking_address=identity.tracking_address,
            password="set" if identity.smtp_password_encrypted else "none (signed in)",
        )
    return fields
