"""The background side of the health checks, in every process: claim the identities whose checks are due (one
process per identity and interval: the claim is in the database) and run them a few at a time, and finish runs whose
probe's copy did not arrive in time."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.services.health.service import HealthService

log = logging.getLogger(__name__)

CONCURRENT_RUNS = 4


class HealthScheduler:
    def __init__(self, health: HealthService, *, interval: float, tracking_timeout: float) -> None:
        self.health = health
        # Due checks start within a quarter of the interval, and a probe's deadline fires at most 5 s late.
        self.tick = min(5.0, max(0.05, min(interval, tracking_timeout) / 4))
        self._runs: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        while True:
            try:
                await self.health.expire()
                free = CONCURRENT_RUNS - len(self._runs)
                if free > 0:
                    for identity_id in await self.health.claim_due(limit=free):
                        task = asyncio.create_task(self._one(identity_id))
                        self._runs.add(task)
                        task.add_done_callback(self._runs.discard)
            except Exception:  # noqa: BLE001 - try again next tick
                log.exception("health: the scheduler's round failed")
            await asyncio.sleep(self.tick)

    async def _one(self, identity_id: int) -> None:
        try:
            await self.health.run(identity_id)
        except Exception:  # noqa: BLE001 - retried at the next interval
            log.exception("health: the scheduled checks of identity %s failed", identity_id)

    async def stop(self) -> None:
        """Cancel runs in flight (an interrupted run is finished, as unknown, by whichever process sees it first)."""
        for task in list(self._runs):
            task.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        self._runs.clear()
