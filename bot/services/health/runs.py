"""The stored runs of the health checks and the schedule, as conditional updates and a partial unique index, so
that each thing happens once across processes: a scheduled run is claimed by one process per interval, an identity
has at most one open run, and a run is finished (and its outcome announced) once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from bot.services.notifier import HealthFinding
from models import CheckOutcome, Database, HealthCheck, Identity, IdentityLifecycle, IdentityStatus
from models.base import utcnow

SCHEDULE = "schedule"  # HealthCheck.started_by of the runs the scheduler starts (others name the Slack user)


def to_json(findings: Sequence[HealthFinding]) -> list[dict[str, object]]:
    return [asdict(f) for f in findings]


def from_json(stored: Sequence[dict[str, object]] | None) -> list[HealthFinding]:
    fields = set(HealthFinding.__dataclass_fields__)
    return [HealthFinding(**{k: v for k, v in f.items() if k in fields}) for f in stored or []]  # type: ignore[arg-type]


class HealthRuns:
    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    async def claim_due(self, interval: timedelta, *, limit: int) -> list[int]:
        """Ready identities in use whose scheduled checks are due, claimed for this process: each claim moves the due
        time one interval on with a conditional update, so another process finds nothing to claim until then. An
        identity seen for the first time is given its first due time, one interval away."""
        now = self.clock()
        query = (
            select(Identity.id, Identity.health_due_at)
            .where(
                Identity.status == IdentityStatus.READY,
                Identity.lifecycle == IdentityLifecycle.ACTIVE,  # disabled: sends nothing; deleted: checks stopped
                or_(Identity.health_due_at.is_(None), Identity.health_due_at <= now),
            )
            .order_by(Identity.health_due_at.is_not(None), Identity.health_due_at, Identity.id)
            .limit(max(limit, 1) * 4)
        )
        async with self.db.session() as session:
            candidates = (await session.execute(query)).all()
        claimed: list[int] = []
        for identity_id, due_at in candidates:
            if len(claimed) >= limit:
                break
            seen = Identity.health_due_at.is_(None) if due_at is None else Identity.health_due_at <= now
            async with self.db.transaction() as session:
                result = await session.execute(
                    update(Identity)
                    .where(Identity.id == identity_id, seen)
                    .values(health_due_at=now + interval, updated_at=Identity.updated_at)
                )
            if result.rowcount == 1 and due_at is not None:  # type: ignore[attr-defined]
                claimed.append(identity_id)
        return claimed

    async def open(self, identity_id: int, started_by: str) -> int | None:
        """Start a run; None when the identity already has an open one (here or in another process)."""
        run = HealthCheck(identity_id=identity_id, started_by=started_by[:32], started_at=self.clock(), findings=[])
        try:
            async with self.db.transaction() as session:
                session.add(run)
                await session.flush()
                return run.id
        except IntegrityError:
            return None

    async def open_run(self, identity_id: int) -> HealthCheck | None:
        async with self.db.session() as session:
            return await session.scalar(
                select(HealthCheck).where(HealthCheck.identity_id == identity_id, HealthCheck.finished_at.is_(None))
            )

    async def await_probe(self, run_id: int, findings: Sequence[HealthFinding], token: str, deadline: datetime) -> None:
        """Keep what the run found so far and the probe it waits for (stored before the probe is sent, so an early
        copy finds it)."""
        async with self.db.transaction() as session:
            await session.execute(
                update(HealthCheck)
                .where(HealthCheck.id == run_id)
                .values(findings=to_json(findings), probe_token=token, probe_deadline=deadline)
            )

    async def finish(self, run_id: int, findings: Sequence[HealthFinding], outcome: CheckOutcome) -> bool:
        """Finish the run with its findings, once: False when it was already finished (elsewhere)."""
        async with self.db.transaction() as session:
            result = await session.execute(
                update(HealthCheck)
                .where(HealthCheck.id == run_id, HealthCheck.finished_at.is_(None))
                .values(findings=to_json(findings), outcome=outcome, finished_at=self.clock())
            )
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    async def by_token(self, token: str) -> HealthCheck | None:
        async with self.db.session() as session:
            return await session.scalar(select(HealthCheck).where(HealthCheck.probe_token == token))

    async def overdue(self, stale_after: timedelta) -> list[HealthCheck]:
        """Open runs that will not finish by themselves: the probe's deadline passed, or (no probe) the process
        running them stopped mid-way."""
        now = self.clock()
        async with self.db.session() as session:
            rows = await session.scalars(
                select(HealthCheck).where(
                    HealthCheck.finished_at.is_(None),
                    or_(
                        HealthCheck.probe_deadline <= now,
                        (HealthCheck.probe_deadline.is_(None)) & (HealthCheck.started_at <= now - stale_after),
                    ),
                )
            )
            return list(rows.all())

    async def last_finished(self, identity_id: int) -> HealthCheck | None:
        async with self.db.session() as session:
            return await session.scalar(
                select(HealthCheck)
                .where(HealthCheck.identity_id == identity_id, HealthCheck.finished_at.is_not(None))
                .order_by(HealthCheck.finished_at.desc(), HealthCheck.id.desc())
                .limit(1)
            )
