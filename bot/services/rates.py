"""An identity's bounce and complaint rates (its sending reputation, read by health to pause it and by limit
requests as evidence): over a rolling window (7 days), the copies it sent through the gateway
that came back as attributed hard bounces or complaints (the inbound pipeline marks them on `sent_recipients`).

The mailbox providers' published lines are 5 % hard bounces and 0.3 % complaints; below a minimum of mail sent the
rates say little, so callers judge them only from MIN_SENT on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from models import Database, SentRecipient, SlotState
from models.base import utcnow

RATE_WINDOW = timedelta(days=7)
MAX_BOUNCE_RATE = 0.05
MAX_COMPLAINT_RATE = 0.003
MIN_SENT = 20


@dataclass(frozen=True)
class Rates:
    """Copies sent in the window, and how many of them bounced hard or drew a complaint."""

    sent: int
    hard_bounces: int
    complaints: int

    @property
    def bounce_rate(self) -> float:
        return self.hard_bounces / self.sent if self.sent else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0

    @property
    def judged(self) -> bool:
        """Enough mail was sent for the rates to mean something."""
        return self.sent >= MIN_SENT

    @property
    def over_the_line(self) -> bool:
        return self.judged and (self.bounce_rate > MAX_BOUNCE_RATE or self.complaint_rate > MAX_COMPLAINT_RATE)


class SendingRates:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    async def of(self, identity_id: int, *, window: timedelta = RATE_WINDOW) -> Rates:
        """The identity's rates over the last `window` (copies sent in it, and their attributed bounces/complaints)."""
        since = self.clock() - window
        query = select(
            func.count(),
            func.count(SentRecipient.bounced_at),
            func.count(SentRecipient.complained_at),
        ).where(
            SentRecipient.identity_id == identity_id,
            SentRecipient.state == SlotState.SENT,
            SentRecipient.sent_at > since,
        )
        async with self.db.session() as session:
            sent, bounced, complained = (await session.execute(query)).one()
        return Rates(int(sent or 0), int(bounced or 0), int(complained or 0))
