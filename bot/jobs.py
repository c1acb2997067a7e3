"""Background work every process runs: recovery at start, the inbound processing drain, the sweep (tracking
timeouts, limit requests Slack did not take) and the health checks' scheduler. Conditional updates and processing
locks make each happen once across processes."""

from __future__ import annotations

import asyncio
import logging

from bot.services.health import HealthScheduler
from bot.services.identities.lifecycle import IdentityLifecycleService
from bot.services.identities.sign_in import MailboxSignIn
from bot.services.incoming import Drain, IncomingMail
from bot.services.limits import LimitService
from bot.services.limits.time_boxes import TimeBoxes
from bot.services.verification import VerificationService

log = logging.getLogger(__name__)

RETRY_EVERY_SECONDS = 30.0


class Jobs:
    def __init__(
        self,
        verification: VerificationService,
        incoming: IncomingMail,
        limits: LimitService,
        *,
        tracking_timeout: float,
        sign_in: MailboxSignIn | None = None,
        drain: Drain | None = None,
        health: HealthScheduler | None = None,
        time_boxes: TimeBoxes | None = None,
        lifecycle: IdentityLifecycleService | None = None,
    ) -> None:
        self.verification = verification
        self.sign_in = sign_in
        self.incoming = incoming
        self.limits = limits
        self.drain = drain
        self.health = health
        self.time_boxes = time_boxes  # time-boxed increases revert at their end (every round: it is one query)
        self.lifecycle = lifecycle  # deleted identities' addresses are released when their hold ends
        # Timeouts fire within a quarter of TRACKING_TIMEOUT (at most 5 s late); retries every ~30 s.
        self.interval = min(5.0, max(0.2, tracking_timeout / 4))
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.recover()))
        self._tasks.append(asyncio.create_task(self.sweep()))
        if self.health is not None:
            self._tasks.append(asyncio.create_task(self.health.run()))

    async def stop(self) -> None:
        if self.drain is not None:
            await self.drain.stop()
        if self.health is not None:
            await self.health.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def recover(self) -> None:
        """Mail stored before a crash or restart is processed now (nothing accepted is lost); then the drain works
        through whatever arrives."""
        try:
            count = await self.incoming.process_pending()
            if count:
                log.info("processed %d inbound message(s) left from before the restart", count)
        except Exception:
            log.exception("processing pending inbound mail failed")
        if self.drain is not None:
            self.drain.start()

    async def sweep(self) -> None:
        retry_every = max(1, int(RETRY_EVERY_SECONDS / self.interval))
        rounds = 0
        while True:
            try:
                await self.verification.expire_tracking()
                if self.time_boxes is not None:
                    await self.time_boxes.end_expired()
                rounds += 1
                if rounds % retry_every == 0:
                    if self.drain is None:
                        await self.incoming.process_pending()
                    await self.limits.post_unposted()
                    if self.sign_in is not None:
                        await self.sign_in.purge()  # sign-ins of modals long closed
                    if self.lifecycle is not None:
                        await self.lifecycle.release_expired()
            except Exception:
                log.exception("background sweep failed")
            await asyncio.sleep(self.interval)
