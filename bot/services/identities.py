"""Creating, finding and listing email identities."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bot.services import audit
from bot.services.errors import FormErrors, NotFound
from bot.services.notifier import Notifier
from bot.services.validation import (
    check_limits,
    clean_name,
    local_part_from_name,
    needs_approval,
    normalize_address,
    parse_limit,
)
from models import Database, Identity, IdentityKind, LimitRequest
from models.base import utcnow
from models.tables import DEFAULT_DAILY_LIMIT, DEFAULT_HOURLY_LIMIT


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


@dataclass
class Created:
    identity: Identity
    limit_request: LimitRequest | None
    duplicate: bool = False


class IdentityService:
    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        *,
        platform_domain: str,
        tracking_domain: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.notifier = notifier
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
                        select(Identity.address).where(
                            Identity.address.like(f"{local}%@{self.platform_domain}")
                        )
                    )
                ).all()
            )
        candidate, n = f"{local}@{self.platform_domain}", 1
        while candidate in taken:
            n += 1
            candidate = f"{local}{n}@{self.platform_domain}"
        return candidate

    def is_platform_address(self, address: str) -> bool:
        domain = address.rpartition("@")[2].lower()
        return domain in (self.platform_domain, self.tracking_domain)

    # ---- validation ------------------------------------------------------------------------------------
    async def validate(self, draft: IdentityDraft) -> tuple[dict[str, object], dict[str, str]]:
        """Parse a draft. Returns (clean values, errors by field)."""
        errors: dict[str, str] = {}
        clean: dict[str, object] = {}
        if draft.kind != IdentityKind.PLATFORM.value:
            errors["kind"] = "Choose the kind of identity."
        for field, what in (
            ("display_name", "sender's display name"),
            ("company_name", "sender company name"),
        ):
            value, err = clean_name(getattr(draft, field), what)
            clean[field] = value
            if err:
                errors[field] = err

        raw_address = (draft.address or "").strip()
        if raw_address and "@" not in raw_address:
            raw_address = f"{raw_address}@{self.platform_domain}"
        address, err = normalize_address(raw_address)
        if err:
            errors["address"] = err if raw_address else "Enter the address, or click Auto create."
        elif address.rpartition("@")[2] != self.platform_domain:
            errors["address"] = f"Platform identities must use an address ending in @{self.platform_domain}."
        else:
            clean["address"] = address
            async with self.db.session() as session:
                exists = await session.scalar(select(func.count()).where(Identity.address == address))
            if exists:
                errors["address"] = f"{address} is already taken. Click Auto create for a free one."

        forwarding, err = normalize_address(draft.forwarding_address)
        if err:
            errors["forwarding_address"] = err
        elif self.is_platform_address(forwarding):
            errors["forwarding_address"] = (
                "Responses must be forwarded to a mailbox outside the platform (for example your own inbox)."
            )
        else:
            clean["forwarding_address"] = forwarding

        hourly, err_h = parse_limit(draft.hourly_limit, "hourly limit")
        daily, err_d = parse_limit(draft.daily_limit, "daily limit")
        if err_h:
            errors["hourly_limit"] = err_h
        if err_d:
            errors["daily_limit"] = err_d
        if hourly is not None and daily is not None:
            for field, msg in check_limits(hourly, daily).items():
                errors.setdefault(field, msg)
        clean["hourly_limit"], clean["daily_limit"] = hourly, daily

        if not draft.notices_channel:
            errors["notices_channel"] = "Choose the channel where verification notices go."
        clean["notices_channel"] = draft.notices_channel
        return clean, errors

    # ---- create ----------------------------------------------------------------------------------------
    async def create(self, draft: IdentityDraft, *, actor: str, team_id: str, view_id: str | None) -> Created:
        """Validate and store a new identity. Limits above the defaults become a pending increase request
        while the identity runs on the defaults. The same view submitted twice creates one identity.
        Raises FormErrors (field -> message) and stores nothing when the input is not acceptable."""
        if view_id and (existing := await self._created_from(view_id)):
            return existing
        clean, errors = await self.validate(draft)
        if errors:
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
                    kind=identity.kind,
                    display_name=identity.display_name,
                    company_name=identity.company_name,
                    address=identity.address,
                    hourly_limit=identity.hourly_limit,
                    daily_limit=identity.daily_limit,
                    forwarding_address=identity.forwarding_address,
                    notices_channel=identity.notices_channel,
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
            raise FormErrors(
                {"address": f"{identity.address} was just taken. Click Auto create for a free one."}
            ) from exc
        return Created(identity, request)

    async def announce(self, created: Created) -> None:
        """Tell the identity's channel about it. Separate from create() so Slack gets its ack first."""
        await self.notifier.identity_created(created.identity, created.limit_request)

    async def _created_from(self, view_id: str) -> Created | None:
        async with self.db.session() as session:
            identity = await session.scalar(select(Identity).where(Identity.created_from_view == view_id))
            if identity is None:
                return None
            request = await session.scalar(
                select(LimitRequest).where(LimitRequest.identity_id == identity.id).order_by(LimitRequest.id)
            )
            return Created(identity, request, duplicate=True)

    # ---- read ------------------------------------------------------------------------------------------
    async def list_for_team(self, team_id: str) -> list[Identity]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(Identity).where(Identity.team_id == team_id).order_by(Identity.created_at, Identity.id)
            )
            return list(rows.all())

    async def get_by_address(self, team_id: str, address: str) -> Identity:
        wanted = address.strip().strip("<>").lower()
        async with self.db.session() as session:
            identity = await session.scalar(
                select(Identity).where(Identity.team_id == team_id, Identity.address == wanted)
            )
        if identity is None:
            raise NotFound(f"No identity with the address {wanted} in this workspace.")
        return identity

    async def pending_request(self, identity_id: int) -> LimitRequest | None:
        async with self.db.session() as session:
            return await session.scalar(
                select(LimitRequest)
                .where(LimitRequest.identity_id == identity_id, LimitRequest.status == "pending")
                .order_by(LimitRequest.id.desc())
            )
