"""The processing drain: one task per process that works through stored messages, so accepting mail never waits on
processing. The inbound store wakes it after each commit; it also looks by itself every POLL_SECONDS, which picks up
retries that became due and messages a crashed process left behind. At most `concurrency` messages are in flight.

Accepting comes first: while the door is busy (`busy()`: SMTP sessions are open), the drain works one message at a
time with a short pause between messages, so a flood of mail is accepted at full speed and processed steadily behind
it; once the door is quiet it works at full concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bot.services.incoming.pipeline import IncomingMail

log = logging.getLogger(__name__)

DRAIN_CONCURRENCY = 4
POLL_SECONDS = 5.0
# A message another live process holds is not asked for again before this.
ELSEWHERE_SECONDS = 10.0
# While the door is busy: one message at a time, and this pause after each.
TRICKLE_PAUSE = 0.05


class Drain:
    def __init__(
        self,
        incoming: IncomingMail,
        *,
        concurrency: int = DRAIN_CONCURRENCY,
        busy: Callable[[], bool] = lambda: False,
        pause: float = TRICKLE_PAUSE,
    ) -> None:
        self.incoming = incoming
        self.concurrency = concurrency
        self.busy = busy
        self.pause = pause
        self._wake = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._elsewhere: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def notify(self, message_id: int) -> None:
        """A message was stored (the inbound store's on_stored)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop taking work and cancel what is in flight (it stays pending and is taken over later)."""
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._inflight.clear()

    async def idle(self) -> bool:
        """Nothing in flight and nothing due (tests and benchmarks wait on it)."""
        return not self._inflight and not await self.incoming.due(limit=1)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._fill()
            except Exception:  # noqa: BLE001 - the database may be away for a moment: look again later
                log.exception("incoming: the processing drain could not read pending messages")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def _fill(self) -> None:
        free = (1 if self.busy() else self.concurrency) - len(self._inflight)
        if free <= 0:
            return
        now = time.monotonic()
        self._elsewhere = {k: v for k, v in self._elsewhere.items() if v > now}
        exclude = frozenset(self._inflight) | frozenset(self._elsewhere)
        for message_id in await self.incoming.due(limit=free, exclude=exclude):
            task = asyncio.create_task(self._process(message_id))
            self._inflight[message_id] = task

    async def _process(self, message_id: int) -> None:
        try:
            if not await self.incoming.process(message_id):
                self._elsewhere[message_id] = time.monotonic() + ELSEWHERE_SECONDS
        except Exception:  # noqa: BLE001 - counted and logged by process(): retried later or parked
            pass
        finally:
            if self.busy():
                await asyncio.sleep(self.pause)
            self._inflight.pop(message_id, None)
            self._wake.set()
