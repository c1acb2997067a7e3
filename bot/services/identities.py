"""Creating, finding and listing email identities."""

from __future__ import annotations

import re
import secrets as secrets_module
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from bot.mail.messages import setup_test_message
from bot.mail.outbound import MailSender, SetupCheck, SmtpServer
from bot.services import audit
from bot.services.errors import FormErrors, NotAllowed, NotFound
from bot.services.notifier import Notifier
from bot.services.providers import PROVIDERS
from bot.services.secrets import SecretBox
from bot.services.steps import reset_steps
from bot.services.validation import (
    check_limits,
    clean_name,
    local_part_from_name,
    needs_approval,
    normalize_address,
    parse_limit,
)
from models import Database, Identity, IdentityKind, IdentityStatus, LimitRequest, StepName
from models.base import utcnow
from models.tables import DEFAULT_DAILY_LIMIT, DEFAULT_HOURLY_LIMIT

HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


@dataclass
class IdentityDraft:
    """What a person typed into the identity form, unparsed. Keys of FormErrors use these field names."""

    kind: str = IdentityKind.PLATFORM.value
    display_name: str | None = None
    company_name: str | None = None
    address: str | None = None
    hourly_limit: str | None = None
    daily_limit: str | None = None
    forwarding_address: str | None = None
    notices_channel: str | None = None
    # Company domain only.
    esp_provider: str | None = None
    smtp_host: str | None = None
    smtp_port: str | None = None
    smtp_security: str | None = None
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    tracking_address: str | None = None
    tested_fingerprint: str | None = None


@dataclass
class SmtpDraft:
    """Checked SMTP settings of a company-domain form (password is the effective one: typed, or kept)."""

    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)

    def server(self) -> SmtpServer:
        return SmtpServer(self.host, self.port, self.security, self.username, self.password)


@dataclass
class Created:
    identity: Identity
    limit_request: LimitRequest | None
    duplicate: bool = False


@dataclass
class Updated:
    identity: Identity
    changed: list[str]
    smtp_changed: bool
    forwarding_changed: bool
    reset_steps: list[StepName] = field(default_factory=list)  # verification steps the change made void
    reset_reason: str = ""


class IdentityService:
    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        *,
        secrets: SecretBox,
        mail: MailSender,
        platform_domain: str,
        tracking_domain: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.secrets = secrets
        self.mail = mail
        self.platform_domain = platform_domain
        self.tracking_domain = tracking_domain
        self.clock = clock

    # ---- addresses -------------------------------------------------------------------------------------
    async def suggest_address(self, display_name: str | None) -> str:
        """A free platform-domain address derived from the display name: jane.doe@…, then jane.doe2@…"""
        local = local_part_from_name(display_name or "")
        async with self.db.session() as session:
            taken = set(
                (
                    await session.scalars(
                        select(Identity.address).where(Identity.address.like(f"{local}%@{self.platform_domain}"))
                    )
                ).all()
            )
        candidate, n = f"{local}@{self.platform_domain}", 1
        while candidate in taken:
            n += 1
            candidate = f"{local}{n}@{self.platform_domain}"
        return candidate

    def new_tracking_address(self) -> str:
        """A unique, unguessable CC tracking address (80 random bits)."""
        return f"cc-{secrets_module.token_hex(10)}@{self.tracking_domain}"

    def is_platform_address(self, address: str) -> bool:
        domain = address.rpartition("@")[2].lower()
        return domain in (self.platform_domain, self.tracking_domain)

    async def serves(self, address: str) -> bool:
        """Whether the inbound server accepts mail for this address: a platform identity or a tracking address."""
        wanted = address.strip().lower()
        if not self.is_platform_address(wanted):
            return False
        async with self.db.session() as session:
            found = await session.scalar(
                select(func.count()).where(or_(Identity.address == wanted, Identity.tracking_address == wanted))
            )
        return bool(found)

    # ---- validation ------------------------------------------------------------------------------------
    async def _check_address(self, draft: IdentityDraft, errors: dict[str, str]) -> str | None:
        raw = (draft.address or "").strip()
        if draft.kind == IdentityKind.PLATFORM.value and raw and "@" not in raw:
            raw = f"{raw}@{self.platform_domain}"
        address, err = normalize_address(raw)
        if err:
            if not raw and draft.kind == IdentityKind.PLATFORM.value:
                err = "Enter the address, or click Auto create."
            errors["address"] = err
            return None
        domain = address.rpartition("@")[2]
        if draft.kind == IdentityKind.PLATFORM.value and domain != self.platform_domain:
            errors["address"] = f"Platform identities must use an address ending in @{self.platform_domain}."
            return None
        if draft.kind == IdentityKind.COMPANY.value and self.is_platform_address(address):
            errors["address"] = (
                f"Company identities use your own domain. For an @{self.platform_domain} address choose "
                "Platform domain."
            )
            return None
        async with self.db.session() as session:
            exists = await session.scalar(select(func.count()).where(Identity.address == address))
        if exists:
            errors["address"] = f"{address} is already taken." + (
                " Click Auto create for a free one." if draft.kind == IdentityKind.PLATFORM.value else ""
            )
            return None
        return address

    def check_smtp_fields(
        self, draft: IdentityDraft, address: str | None, *, stored: Identity | None = None
    ) -> tuple[SmtpDraft | None, dict[str, str]]:
        """The SMTP part of a company-domain form. `stored` supplies the saved password when none was typed."""
        errors: dict[str, str] = {}
        host = (draft.smtp_host or "").strip().lower().rstrip(".")
        if not host:
            errors["smtp_host"] = "Enter the SMTP server, e.g. smtp.gmail.com."
        elif not HOSTNAME.fullmatch(host):
            errors["smtp_host"] = "That is not a server name: use letters, digits, dots and dashes only."
        port: int | None = None
        port_text = (draft.smtp_port or "").strip()
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            errors["smtp_port"] = "Enter the SMTP port: a number such as 587 (STARTTLS) or 465 (SSL/TLS)."
        else:
            port = int(port_text)
        security = draft.smtp_security or ""
        if security not in ("starttls", "ssl"):
            errors["smtp_security"] = "Choose STARTTLS or SSL/TLS."
        username = (draft.smtp_username or "").strip() or (address or "")
        if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in username):
            errors["smtp_username"] = "The username can't contain line breaks or control characters."
        password = draft.smtp_password or ""
        if any(c in password for c in "\r\n\x00"):
            errors["smtp_password"] = "The password can't contain line breaks."
        password = normalize_app_password(password)
        if not password:
            if stored is not None and stored.smtp_password_encrypted:
                password = self.secrets.decrypt(stored.smtp_password_encrypted)
            else:
                errors["smtp_password"] = (
                    "Enter the SMTP password (for Gmail and Outlook: a 16-character app password)."
                )
        if errors or port is None or not address:
            return None, errors
        return SmtpDraft(host, port, security, username, password), errors

    def smtp_fingerprint(self, smtp: SmtpDraft, address: str) -> str:
        """Keyed HMAC of exactly the settings a test passed with; reveals nothing, safe in private_metadata."""
        return self.secrets.mac("smtp", address, smtp.host, str(smtp.port), smtp.security, smtp.username, smtp.password)

    async def validate(
        self, draft: IdentityDraft, *, stored: Identity | None = None
    ) -> tuple[dict[str, object], dict[str, str]]:
        """Parse a draft (a new identity, or an edit of `stored`). Returns (clean values, errors by field)."""
        errors: dict[str, str] = {}
        clean: dict[str, object] = {}
        if draft.kind not in (IdentityKind.PLATFORM.value, IdentityKind.COMPANY.value):
            errors["kind"] = "Choose the kind of identity."
            return clean, errors
        for name, what in (("display_name", "sender's display name"), ("company_name", "sender company name")):
            value, err = clean_name(getattr(draft, name), what)
            clean[name] = value
            if err:
                errors[name] = err

        address = stored.address if stored is not None else await self._check_address(draft, errors)
        clean["address"] = address

        forwarding, err = normalize_address(draft.forwarding_address)
        if err:
            errors["forwarding_address"] = err
        elif self.is_platform_address(forwarding) or forwarding == address:
            errors["forwarding_address"] = (
                "Responses must be forwarded to a mailbox outside the platform (for example your own inbox)."
            )
        else:
            clean["forwarding_address"] = forwarding

        if stored is None:
            hourly, err_h = parse_limit(draft.hourly_limit, "hourly limit")
            daily, err_d = parse_limit(draft.daily_limit, "daily limit")
            if err_h:
                errors["hourly_limit"] = err_h
            if err_d:
                errors["daily_limit"] = err_d
            if hourly is not None and daily is not None:
                for name, msg in check_limits(hourly, daily).items():
                    errors.setdefault(name, msg)
            clean["hourly_limit"], clean["daily_limit"] = hourly, daily

        if not draft.notices_channel:
            errors["notices_channel"] = "Choose the channel where verification notices go."
        clean["notices_channel"] = draft.notices_channel

        if draft.kind == IdentityKind.COMPANY.value:
            smtp, smtp_errors = self.check_smtp_fields(draft, address, stored=stored)
            errors.update(smtp_errors)
            clean["smtp"] = smtp
            if smtp is not None and address:
                unchanged = stored is not None and self._same_smtp(stored, smtp)
                if not unchanged and draft.tested_fingerprint != self.smtp_fingerprint(smtp, address):
                    errors["smtp_password"] = (
                        "Click Test email setup and wait for “Email identity seems to be correctly set up” before "
                        "saving: these settings have not passed a test yet."
                    )
            tracking = (stored.tracking_address if stored is not None else draft.tracking_address) or ""
            if stored is None and not tracking.endswith("@" + self.tracking_domain):
                tracking = self.new_tracking_address()
            clean["tracking_address"] = tracking
        return clean, errors

    def _same_smtp(self, stored: Identity, smtp: SmtpDraft) -> bool:
        if (stored.smtp_host, stored.smtp_port, stored.smtp_security, stored.smtp_username) != (
            smtp.host,
            smtp.port,
            smtp.security,
            smtp.username,
        ):
            return False
        encrypted = stored.smtp_password_encrypted
        return bool(encrypted) and self.secrets.decrypt(encrypted or "") == smtp.password

    # ---- test email setup ------------------------------------------------------------------------------
    async def test_setup(
        self, draft: IdentityDraft, *, stored: Identity | None = None
    ) -> tuple[SetupCheck, str | None]:
        """Run a real SMTP session with the form's settings. Returns the result and, when it passed, the
        fingerprint that lets Save changes accept exactly these settings."""
        errors: dict[str, str] = {}
        address = stored.address if stored is not None else None
        if address is None:
            address, err = normalize_address(draft.address)
            if err:
                errors["address"] = "Enter the email address first."
        smtp, smtp_errors = self.check_smtp_fields(draft, address, stored=stored)
        errors.update(smtp_errors)
        if errors or smtp is None or not address:
            first = next(iter(errors.values()))
            return SetupCheck(ok=False, message=f"Can't test yet: {first}", diagnosis=None), None
        display_name = (draft.display_name or "").strip()
        if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in display_name):
            display_name = ""
        to = (stored.tracking_address if stored else None) or draft.tracking_address or self.new_tracking_address()
        message = setup_test_message(display_name, address, to)
        result = await self.mail.check_setup(smtp.server(), sender=address, test_message=message)
        return result, (self.smtp_fingerprint(smtp, address) if result.ok else None)

    # ---- create ----------------------------------------------------------------------------------------
    async def create(self, draft: IdentityDraft, *, actor: str, team_id: str, view_id: str | None) -> Created:
        """Validate and store a new identity. Limits above the defaults become a pending increase request
        while the identity runs on the defaults. The same view submitted twice creates one identity.
        Raises FormErrors (field -> message) and stores nothing when the input is not acceptable."""
        if view_id and (existing := await self._created_from(view_id)):
            return existing
        clean, errors = await self.validate(draft)
        if errors:
            # A copy of this submission may have been saved while we validated ("address taken" by ourselves).
            if view_id and (existing := await self._created_from(view_id)):
                return existing
            raise FormErrors(errors)
        hourly, daily = int(clean["hourly_limit"]), int(clean["daily_limit"])  # type: ignore[call-overload]
        wants_increase = needs_approval(hourly, daily)
        now = self.clock()
        identity = Identity(
            team_id=team_id,
            kind=draft.kind,
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
        smtp = clean.get("smtp")
        if isinstance(smtp, SmtpDraft):
            self._apply_smtp(identity, smtp, draft.esp_provider)
            identity.tracking_address = str(clean["tracking_address"])
        request: LimitRequest | None = None
        try:
            async with self.db.transaction() as session:
                session.add(identity)
                await session.flush()
                audit.record(
                    session,
                    actor=actor,
                    action="identity.created",
                    identity_id=identity.id,
                    **self._describe(identity),
                )
                if wants_increase:
                    request = LimitRequest(
                        identity_id=identity.id,
                        requested_by=actor,
                        previous_hourly=identity.hourly_limit,
                        previous_daily=identity.daily_limit,
                        requested_hourly=hourly,
                        requested_daily=daily,
                        reason="Requested when the identity was created.",
                        created_at=now,
                    )
                    session.add(request)
                    await session.flush()
                    audit.record(
                        session,
                        actor=actor,
                        action="limits.requested",
                        identity_id=identity.id,
                        request_id=request.id,
                        hourly=hourly,
                        daily=daily,
                    )
        except IntegrityError as exc:
            # Lost a race: either the same view was submitted twice at once, or someone took the address.
            if view_id and (existing := await self._created_from(view_id)):
                return existing
            raise FormErrors({"address": f"{identity.address} was just taken."}) from exc
        return Created(identity, request)

    def _apply_smtp(self, identity: Identity, smtp: SmtpDraft, provider: str | None) -> None:
        identity.esp_provider = provider if provider in PROVIDERS else "other"
        identity.smtp_host, identity.smtp_port, identity.smtp_security = smtp.host, smtp.port, smtp.security
        identity.smtp_username = smtp.username
        identity.smtp_password_encrypted = self.secrets.encrypt(smtp.password)

    @staticmethod
    def _describe(identity: Identity) -> dict[str, object]:
        """What the audit trail records of an identity: everything but the password."""
        fields = {
            "kind": identity.kind,
            "display_name": identity.display_name,
            "company_name": identity.company_name,
            "address": identity.address,
            "hourly_limit": identity.hourly_limit,
            "daily_limit": identity.daily_limit,
            "forwarding_address": identity.forwarding_address,
            "notices_channel": identity.notices_channel,
        }
        if identity.kind == IdentityKind.COMPANY.value:
            fields.update(
                esp_provider=identity.esp_provider,
                smtp_host=identity.smtp_host,
                smtp_port=identity.smtp_port,
                smtp_security=identity.smtp_security,
                smtp_username=identity.smtp_username,
                tracking_address=identity.tracking_address,
                password="set",
            )
        return fields

    async def announce(self, created: Created) -> None:
        """Post the identity's panel to its channel. Separate from create() so Slack gets its ack first."""
        where = await self.notifier.identity_created(created.identity, created.limit_request)
        if where is not None:
            async with self.db.transaction() as session:
                await session.execute(
                    update(Identity)
                    .where(Identity.id == created.identity.id)
                    .values(panel_channel=where[0], panel_ts=where[1])
                )
            created.identity.panel_channel, created.identity.panel_ts = where

    async def announce_update(self, updated: Updated, *, actor: str) -> None:
        await self.notifier.identity_updated(updated.identity, updated.changed, actor)

    async def _created_from(self, view_id: str) -> Created | None:
        async with self.db.session() as session:
            identity = await session.scalar(select(Identity).where(Identity.created_from_view == view_id))
            if identity is None:
                return None
            request = await session.scalar(
                select(LimitRequest).where(LimitRequest.identity_id == identity.id).order_by(LimitRequest.id)
            )
            return Created(identity, request, duplicate=True)

    # ---- edit ------------------------------------------------------------------------------------------
    def may_edit(self, identity: Identity, actor: str, *, is_manager: bool) -> bool:
        """The identity's creator and managers may change it."""
        return is_manager or identity.created_by == actor

    async def update(self, identity_id: int, draft: IdentityDraft, *, actor: str, is_manager: bool) -> Updated:
        """Apply an edit. Raises FormErrors (nothing stored) or NotAllowed. Limits are changed elsewhere
        (they may need a manager), and the address can't change."""
        stored = await self.get(identity_id)
        if not self.may_edit(stored, actor, is_manager=is_manager):
            raise NotAllowed("Only the identity's creator or a manager can change it.")
        draft.kind = stored.kind
        clean, errors = await self.validate(draft, stored=stored)
        if errors:
            raise FormErrors(errors)
        async with self.db.transaction() as session:
            identity = await session.get(Identity, identity_id, with_for_update=True)
            if identity is None:
                raise NotFound("This identity no longer exists.")
            before = self._describe(identity)
            identity.display_name = str(clean["display_name"])
            identity.company_name = str(clean["company_name"])
            identity.forwarding_address = str(clean["forwarding_address"])
            identity.notices_channel = str(clean["notices_channel"])
            smtp = clean.get("smtp")
            password_changed = False
            if isinstance(smtp, SmtpDraft):
                old_password = (
                    self.secrets.decrypt(identity.smtp_password_encrypted) if identity.smtp_password_encrypted else None
                )
                password_changed = old_password != smtp.password
                self._apply_smtp(identity, smtp, draft.esp_provider or identity.esp_provider)
            identity.updated_at = self.clock()
            after = self._describe(identity)
            changed = [k for k in after if before.get(k) != after[k] and k != "password"]
            if password_changed:
                changed.append("password")
            detail: dict[str, object] = {k: {"from": before.get(k), "to": after[k]} for k in changed if k != "password"}
            if password_changed:
                detail["password"] = "password changed"
            audit.record(session, actor=actor, action="identity.updated", identity_id=identity.id, changes=detail)
            # Changed settings void the checks that proved them, in this same transaction: the identity can't
            # stay "ready" (and keep sending through the gateway) on settings nobody verified.
            smtp_fields = {"smtp_host", "smtp_port", "smtp_security", "smtp_username", "password"}
            result = Updated(
                identity=identity,
                changed=changed,
                smtp_changed=bool(smtp_fields & set(changed)),
                forwarding_changed="forwarding_address" in changed,
            )
            reasons = []
            if result.smtp_changed:
                result.reset_steps += [StepName.SENDING, StepName.TRACKING]
                reasons.append("the SMTP settings changed")
            if result.forwarding_changed:
                result.reset_steps.append(StepName.RECEIVING)
                reasons.append("the response forwarding address changed")
            if result.reset_steps:
                result.reset_reason = " and ".join(reasons)
                await reset_steps(
                    session, identity.id, result.reset_steps, reason=result.reset_reason, now=identity.updated_at
                )
                identity.status = IdentityStatus.NOT_VERIFIED.value
                audit.record(
                    session,
                    actor=actor,
                    action="verification.reset",
                    identity_id=identity.id,
                    steps=[s.value for s in result.reset_steps],
                    reason=result.reset_reason,
                )
        return result

    # ---- read ------------------------------------------------------------------------------------------
    async def get(self, identity_id: int) -> Identity:
        async with self.db.session() as session:
            identity = await session.get(Identity, identity_id)
        if identity is None:
            raise NotFound("This identity no longer exists.")
        return identity

    async def list_for_team(self, team_id: str) -> list[Identity]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(Identity).where(Identity.team_id == team_id).order_by(Identity.created_at, Identity.id)
            )
            return list(rows.all())

    async def get_by_address(self, team_id: str, address: str) -> Identity:
        wanted = address.strip().strip("<>").lower()
        if wanted.startswith("mailto:"):
            wanted = wanted[len("mailto:") :]
        wanted = wanted.split("|", 1)[0]  # Slack turns typed addresses into <mailto:x|x>
        async with self.db.session() as session:
            identity = await session.scalar(
                select(Identity).where(Identity.team_id == team_id, Identity.address == wanted)
            )
        if identity is None:
            raise NotFound(f"No identity with the address {wanted} in this workspace.")
        return identity

    def smtp_server(self, identity: Identity) -> SmtpServer:
        """The identity's own SMTP server, password decrypted for this use only."""
        if not (identity.smtp_host and identity.smtp_port and identity.smtp_password_encrypted):
            raise NotFound("This identity has no SMTP settings.")
        return SmtpServer(
            identity.smtp_host,
            identity.smtp_port,
            identity.smtp_security or "starttls",
            identity.smtp_username or identity.address,
            self.secrets.decrypt(identity.smtp_password_encrypted),
        )

    async def pending_request(self, identity_id: int) -> LimitRequest | None:
        async with self.db.session() as session:
            return await session.scalar(
                select(LimitRequest)
                .where(LimitRequest.identity_id == identity_id, LimitRequest.status == "pending")
                .order_by(LimitRequest.id.desc())
            )

    async def rotate_secrets(self) -> int:
        """Re-encrypt every stored password under the first key. Returns how many were rotated."""
        count = 0
        async with self.db.transaction() as session:
            rows = await session.scalars(select(Identity).where(Identity.smtp_password_encrypted.is_not(None)))
            for identity in rows.all():
                identity.smtp_password_encrypted = self.secrets.rotate(str(identity.smtp_password_encrypted))
                count += 1
            audit.record(session, actor="cli", action="secrets.rotated", identity_id=None, count=count)
        return count


def normalize_app_password(password: str) -> str:
    """Google shows app passwords as four groups of four ("abcd efgh ijkl mnop"); the spaces are not part of it."""
    squeezed = "".join(password.split())
    if len(squeezed) == 16 and squeezed.isalpha() and squeezed != password:
        return squeezed
    return password.strip()
