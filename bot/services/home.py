"""What the App Home shows and to whom: the team's identities (newest first, a page at a time) with their usage and
what the viewer may do with each (the policy decides), the pending limit requests for managers, and who has opened
the Home tab — so it can be republished when something it shows changes, at most once every REPUBLISH_EVERY per
user across processes (a conditional update on `home_viewers.published_at`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.gateway.window import DAY, HOUR
from bot.services.identities.lifecycle import not_deleted
from bot.services.policy import IdentityAction, Policy
from models import Database, HomeViewer, Identity, LimitRequest, LimitRequestStatus, SentRecipient
from models.base import utcnow
from models.db import dialect_insert

PAGE_SIZE = 20
MAX_REQUESTS_SHOWN = 10
REPUBLISH_EVERY = timedelta(seconds=3)


@dataclass(frozen=True)
class IdentityRow:
    identity: Identity
    sent_last_hour: int
    sent_last_day: int
    permitted: frozenset[IdentityAction]
    pending: LimitRequest | None = None


@dataclass(frozen=True)
class TeamOverview:
    viewer: str
    page: int
    pages: int
    total: int
    rows: list[IdentityRow]
    manager: bool
    requests: list[tuple[LimitRequest, Identity]] = field(default_factory=list)


class HomeService:
    def __init__(self, db: Database, policy: Policy, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.policy = policy
        self.clock = clock

    # ---- who has it open ----------------------------------------------------------------------------------
    async def opened(self, team_id: str, user_id: str, *, page: int | None = None) -> int:
        """The user opened (or paged) the Home tab; returns the page to show."""
        values = {"user_id": user_id, "team_id": team_id, "opened_at": self.clock(), "page": page or 0}
        changes = {"team_id": team_id, "opened_at": values["opened_at"]}
        if page is not None:
            changes["page"] = page
        insert = dialect_insert(self.db)(HomeViewer).values(**values)
        async with self.db.transaction() as session:
            await session.execute(insert.on_conflict_do_update(index_elements=["user_id"], set_=changes))
            current = await session.scalar(select(HomeViewer.page).where(HomeViewer.user_id == user_id))
        return int(current or 0)

    async def viewers(self, team_id: str) -> list[tuple[str, int]]:
        """(user, page) of everyone in the team who has opened the Home tab."""
        async with self.db.session() as session:
            rows = await session.execute(
                select(HomeViewer.user_id, HomeViewer.page).where(HomeViewer.team_id == team_id)
            )
            return [(str(u), int(p or 0)) for u, p in rows.all()]

    async def page_of(self, user_id: str, *, default: int = 0) -> int:
        async with self.db.session() as session:
            page = await session.scalar(select(HomeViewer.page).where(HomeViewer.user_id == user_id))
        return default if page is None else int(page)

    async def claim_republish(self, user_id: str) -> float:
        """0 when this process may republish the user's Home now (and it is recorded), else the seconds to wait."""
        now = self.clock()
        async with self.db.transaction() as session:
            won = await session.execute(
                update(HomeViewer)
                .where(
                    HomeViewer.user_id == user_id,
                    (HomeViewer.published_at.is_(None)) | (HomeViewer.published_at <= now - REPUBLISH_EVERY),
                )
                .values(published_at=now)
            )
            if won.rowcount == 1:  # type: ignore[attr-defined]
                return 0.0
            last = await session.scalar(select(HomeViewer.published_at).where(HomeViewer.user_id == user_id))
        if last is None:
            return 0.0
        return max(0.05, (last + REPUBLISH_EVERY - now).total_seconds())

    # ---- what it shows ------------------------------------------------------------------------------------
    async def overview(self, team_id: str, viewer: str, page: int = 0) -> TeamOverview:
        """The page of the team's identities (newest first) the viewer is on, and for managers the requests."""
        async with self.db.session() as session:
            total = int(
                await session.scalar(
                    select(func.count()).select_from(Identity).where(Identity.team_id == team_id, not_deleted())
                )
                or 0
            )
            pages = max(1, -(-total // PAGE_SIZE))
            page = min(max(page, 0), pages - 1)
            identities = list(
                (
                    await session.scalars(
                        select(Identity)
                        .where(Identity.team_id == team_id, not_deleted())
                        .order_by(Identity.created_at.desc(), Identity.id.desc())
                        .offset(page * PAGE_SIZE)
                        .limit(PAGE_SIZE)
                    )
                ).all()
            )
            usage = await self._usage(session, [i.id for i in identities])
            pending = await self._pending(session, team_id)
        manager = await self.policy.managers.is_manager(viewer)
        rows = []
        for identity in identities:
            permitted = frozenset([a for a in IdentityAction if await self.policy.may(viewer, identity, a)])
            hour, day = usage.get(identity.id, (0, 0))
            rows.append(IdentityRow(identity, hour, day, permitted, pending.get(identity.id, (None, None))[0]))
        requests = sorted(pending.values(), key=lambda p: p[0].id)[:MAX_REQUESTS_SHOWN] if manager else []
        return TeamOverview(viewer, page, pages, total, rows, manager, requests)  # type: ignore[arg-type]

    async def _usage(self, session: AsyncSession, ids: list[int]) -> dict[int, tuple[int, int]]:
        if not ids:
            return {}
        now = self.clock()
        query = (
            select(
                SentRecipient.identity_id,
                func.count().filter(SentRecipient.sent_at > now - HOUR),
                func.count(),
            )
            .where(SentRecipient.identity_id.in_(ids), SentRecipient.sent_at > now - DAY)
            .group_by(SentRecipient.identity_id)
        )
        rows = (await session.execute(query)).all()
        return {int(i): (int(h or 0), int(d or 0)) for i, h, d in rows}

    async def _pending(self, session: AsyncSession, team_id: str) -> dict[int, tuple[LimitRequest, Identity]]:
        query = (
            select(LimitRequest, Identity)
            .join(Identity, Identity.id == LimitRequest.identity_id)
            .where(Identity.team_id == team_id, not_deleted(), LimitRequest.status == LimitRequestStatus.PENDING)
            .order_by(LimitRequest.id)
        )
        rows = (await session.execute(query)).all()
        return {identity.id: (request, identity) for request, identity in rows}
