"""Identities that stay healthy: the runs of the health checks (scheduled, or Re-run checks), the tracking probe,
the bounce and complaint rates that pause an identity, a manager's Resume, and what the channel is told.

A run: the SMTP login and DNS at once, then (company identities) the tracking probe, a response email whose copy
must reach the CC tracking address within TRACKING_TIMEOUT; the run finishes when the copy arrives or the deadline
passes. Finishing is a conditional update (once, in whichever process), and only then is the identity's health
decided: problems -> needs attention, none -> healthy, with earlier problems standing while their check can't run
(state.py). A change posts one message; a run that changes nothing only refreshes the panel (and answers whoever
asked for it). Pausing and resuming are conditional updates too, audited; while paused the gateway defers the
identity's mail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import update

from bot.mail.delivery import Delivery
from bot.mail.domain_checks import Status
from bot.mail.domains import PlatformDomains
from bot.mail.messages import new_token, tracking_probe_message
from bot.mail.outbound import SmtpFailure
from bot.services import audit
from bot.services.health.checks import COPY_ARRIVED, COPY_MISSING, PROBE_NOT_SENT, TRACKING, HealthChecks
from bot.services.health.runs import SCHEDULE, HealthRuns, from_json
from bot.services.health.state import carry, outcome_of, pause_reason, problem_keys, problems, reason
from bot.services.identities import IdentityService
from bot.services.notifier import HealthEvent, HealthFinding, HealthNotice, Notifier
from bot.services.policy import IdentityAction, Policy
from bot.services.rates import RATE_WINDOW, SendingRates
from bot.services.verification import VerificationService
from models import Database, HealthCheck, Identity, IdentityHealth, IdentityKind, InboundMessage
from models.base import utcnow

log = logging.getLogger(__name__)

# A run without a probe takes at most the SMTP timeout and a few seconds of DNS: one open this long was interrupted.
STALE_AFTER = timedelta(minutes=15)
INTERRUPTED = "interrupted"


class HealthService:
    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        identities: IdentityService,
        verification: VerificationService,
        delivery: Delivery,
        domains: PlatformDomains,
        *,
        checks: HealthChecks,
        policy: Policy,
        tracking_timeout: float,
        interval: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.identities = identities
        self.verification = verification
        self.delivery = delivery
        self.platform_sender = domains.sender
        self.checks = checks
        self.policy = policy
        self.tracking_timeout = timedelta(seconds=tracking_timeout)
        self.interval = timedelta(seconds=interval)
        self.clock = clock
        self.runs = HealthRuns(db, clock)
        self.rates = SendingRates(db, clock=clock)

    # ---- runs ------------------------------------------------------------------------------------------------
    async def claim_due(self, *, limit: int) -> list[int]:
        """Identities whose scheduled checks are due, claimed for this process (see HealthRuns.claim_due)."""
        return await self.runs.claim_due(self.interval, limit=limit)

    async def rerun(self, identity_id: int, actor: str) -> bool:
        """*Re-run checks*: the creator or a manager. False when a run is already under way. Raises NotPermitted."""
        identity = await self.identities.get(identity_id)
        await self.policy.require(actor, identity, IdentityAction.RERUN_CHECKS)
        return await self.run(identity_id, started_by=actor)

    async def run(self, identity_id: int, *, started_by: str = SCHEDULE) -> bool:
        """Run the checks; False when the identity already has a run open. The login and DNS finish here; with a
        tracking probe the run finishes when its copy arrives or its deadline passes."""
        identity = await self.identities.get(identity_id)
        run_id = await self.runs.open(identity_id, started_by)
        if run_id is None:
            return False
        findings: list[HealthFinding] = []
        try:
            await self.judge_rates(identity_id)
            login, dns = await asyncio.gather(self.checks.login(identity), self.checks.dns(identity))
            findings = ([login] if login is not None else []) + dns
            if await self._probe(identity, run_id, findings):
                return True
        except Exception:  # noqa: BLE001 - a bug must not leave the run open; what it found so far stands
            log.exception("health: the checks of identity %s failed unexpectedly", identity_id)
            findings.append(HealthFinding(INTERRUPTED, Status.UNKNOWN, code=INTERRUPTED))
        await self._finish(run_id, identity_id, started_by, findings)
        return True

    async def _probe(self, identity: Identity, run_id: int, findings: list[HealthFinding]) -> bool:
        """Send the tracking probe (company identities): True when it went and the run now waits for its copy."""
        if identity.kind != IdentityKind.COMPANY or not identity.tracking_address:
            return False
        token = new_token()
        await self.runs.await_probe(run_id, findings, token, self.clock() + self.tracking_timeout)
        message = tracking_probe_message(self.platform_sender, identity.display_name, identity.address, token)
        try:
            await self.delivery.send_from_platform(message, sender=self.platform_sender, recipients=[identity.address])
        except Exception as exc:  # noqa: BLE001 - our relay is down: tracking can't be checked this time
            detail = exc.diagnosis.text if isinstance(exc, SmtpFailure) else "the probe could not be sent"
            if not isinstance(exc, SmtpFailure):
                log.exception("health: the tracking probe of identity %s could not be sent", identity.id)
            findings.append(
                HealthFinding(TRACKING, Status.UNKNOWN, identity.tracking_address, PROBE_NOT_SENT, "", detail)
            )
            return False
        return True

    async def on_tokens(self, tokens: list[str], message_id: int) -> None:
        """Stored inbound mail carrying our tokens: a probe's copy at the identity's own tracking address finishes
        its run. A copy arriving after its run finished changes nothing (the next run checks again)."""
        async with self.db.session() as session:
            stored = await session.get(InboundMessage, message_id)
            recipients = {r.lower() for r in (stored.rcpt_tos if stored else [])}
        for token in tokens:
            run = await self.runs.by_token(token)
            if run is None or run.finished_at is not None:
                continue
            identity = await self.identities.get(run.identity_id)
            tracking = identity.tracking_address or ""
            if tracking.lower() not in recipients:
                log.warning("health: the probe of identity %s arrived at another address; ignored", identity.id)
                continue
            found = [*from_json(run.findings), HealthFinding(TRACKING, Status.OK, tracking, COPY_ARRIVED)]
            await self._finish(run.id, run.identity_id, run.started_by, found)

    async def expire(self) -> int:
        """Finish runs that won't by themselves: the probe's copy did not arrive in time (a problem: the forwarder
        was removed), or the process running them stopped (nothing concluded). Safe in every process."""
        finished = 0
        for run in await self.runs.overdue(STALE_AFTER):
            found = from_json(run.findings)
            if run.probe_deadline is not None:
                identity = await self.identities.get(run.identity_id)
                tracking = identity.tracking_address or ""
                missing = "no copy of the probe reached the CC tracking address"
                found.append(HealthFinding(TRACKING, Status.PROBLEM, tracking, COPY_MISSING, missing))
            else:
                found.append(HealthFinding(INTERRUPTED, Status.UNKNOWN, code=INTERRUPTED))
            finished += await self._finish(run.id, run.identity_id, run.started_by, found)
        return finished

    async def _finish(self, run_id: int, identity_id: int, started_by: str, found: list[HealthFinding]) -> bool:
        last = await self.runs.last_finished(identity_id)
        before = from_json(last.findings) if last is not None else []
        effective = carry(found, before)
        outcome = outcome_of(effective)
        if not await self.runs.finish(run_id, effective, outcome):
            return False  # finished elsewhere meanwhile
        now = self.clock()
        async with self.db.transaction() as session:
            identity = await session.get(Identity, identity_id, with_for_update=True)
            if identity is None:
                return True
            old = IdentityHealth(identity.health)
            new: IdentityHealth = old if old == IdentityHealth.PAUSED else IdentityHealth.NEEDS_ATTENTION
            if old != IdentityHealth.PAUSED and not problems(effective):
                new = IdentityHealth.HEALTHY
            changed = new != old or (
                new == IdentityHealth.NEEDS_ATTENTION and problem_keys(effective) != problem_keys(before)
            )
            values: dict[str, object] = {"health_checked_at": now, "health_check_outcome": outcome}
            if new != IdentityHealth.PAUSED:
                values["health_reason"] = reason(effective)
            if new != old:
                values.update(health=new, health_changed_at=now)
            await session.execute(
                update(Identity).where(Identity.id == identity_id).values(updated_at=Identity.updated_at, **values)
            )
            if changed:
                audit.record(
                    session,
                    actor=started_by,
                    action="health.changed",
                    identity_id=identity_id,
                    health={"from": old, "to": new},
                    problems=[f.summary for f in problems(effective)],
                )
        event = HealthEvent.CHECKED
        if changed:
            event = HealthEvent.NEEDS_ATTENTION if new == IdentityHealth.NEEDS_ATTENTION else HealthEvent.HEALTHY_AGAIN
        actor = None if started_by == SCHEDULE else started_by
        await self._announce(identity_id, HealthNotice(event, now, tuple(effective), actor))
        return True

    # ---- bounce and complaint rates, pause and resume --------------------------------------------------------
    async def rates_changed(self, identity_ids: Iterable[int]) -> None:
        """Attributed hard bounces or complaints came back for these identities: pause any over the line."""
        for identity_id in dict.fromkeys(identity_ids):
            try:
                await self.judge_rates(identity_id)
            except Exception:  # noqa: BLE001 - the next scheduled run judges again
                log.exception("health: could not judge the rates of identity %s", identity_id)

    async def judge_rates(self, identity_id: int) -> bool:
        """Pause the identity when its rates are over the line (judged from MIN_SENT emails, over the last 7 days,
        or since a manager last resumed it). True when this call paused it."""
        identity = await self.identities.get(identity_id)
        if identity.health == IdentityHealth.PAUSED:
            return False
        now = self.clock()
        since = identity.health_rates_since
        window = RATE_WINDOW if since is None else min(RATE_WINDOW, now - since)
        rates = await self.rates.of(identity_id, window=window)
        if not rates.over_the_line:
            return False
        why = pause_reason(rates)
        async with self.db.transaction() as session:
            result = await session.execute(
                update(Identity)
                .where(Identity.id == identity_id, Identity.health != IdentityHealth.PAUSED)
                .values(
                    health=IdentityHealth.PAUSED,
                    health_reason=why,
                    health_changed_at=now,
                    updated_at=Identity.updated_at,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return False  # paused meanwhile, by another process
            audit.record(
                session,
                actor="health",
                action="health.paused",
                identity_id=identity_id,
                reason=why,
                sent=rates.sent,
                hard_bounces=rates.hard_bounces,
                complaints=rates.complaints,
            )
        log.warning("health: identity %s paused: %s", identity_id, why)
        notice = HealthNotice(
            HealthEvent.PAUSED, now, sent=rates.sent, hard_bounces=rates.hard_bounces, complaints=rates.complaints
        )
        await self._announce(identity_id, notice)
        return True

    async def resume(self, identity_id: int, actor: str) -> bool:
        """*Resume* a paused identity: managers only (raises NotPermitted). Its rates count afresh from now. False
        when it was not paused (any more)."""
        identity = await self.identities.get(identity_id)
        await self.policy.require(actor, identity, IdentityAction.RESUME)
        now = self.clock()
        async with self.db.transaction() as session:
            result = await session.execute(
                update(Identity)
                .where(Identity.id == identity_id, Identity.health == IdentityHealth.PAUSED)
                .values(
                    health=IdentityHealth.HEALTHY,
                    health_reason="",
                    health_changed_at=now,
                    health_rates_since=now,
                    updated_at=Identity.updated_at,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return False
            audit.record(
                session, actor=actor, action="health.resumed", identity_id=identity_id, reason=identity.health_reason
            )
        await self._announce(identity_id, HealthNotice(HealthEvent.RESUMED, now, actor=actor))
        return True

    # ---- reading and telling ---------------------------------------------------------------------------------
    async def last_run(self, identity_id: int) -> HealthCheck | None:
        return await self.runs.last_finished(identity_id)

    async def findings(self, identity_id: int) -> list[HealthFinding]:
        """What the last finished run found (empty before the first)."""
        last = await self.runs.last_finished(identity_id)
        return from_json(last.findings) if last is not None else []

    async def running_since(self, identity_id: int) -> datetime | None:
        run = await self.runs.open_run(identity_id)
        return run.started_at if run is not None else None

    async def _announce(self, identity_id: int, notice: HealthNotice) -> None:
        """Best effort: the state is stored; a Slack failure is logged, not raised."""
        try:
            identity = await self.identities.get(identity_id)
            steps = await self.verification.steps(identity_id)
            await self.notifier.health_changed(identity, steps, notice)
        except Exception:  # noqa: BLE001
            log.exception("health: could not announce %s of identity %s", notice.event, identity_id)
