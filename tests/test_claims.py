"""The database claims behind "at most once": one limit notice per identity per hour, one Home tab republish per
user every few seconds. Time moves by an injected clock."""

from __future__ import annotations

from datetime import timedelta

from bot.services.gateway.notices import LimitNotices
from bot.services.gateway.window import LimitDecision
from bot.services.home import REPUBLISH_EVERY, HomeService
from bot.services.notifier import NullNotifier
from bot.services.policy import Policy
from models import Database, Identity, LimitNotice
from tests.gateway_helpers import Clock, make_identity


class Counting(NullNotifier):
    def __init__(self) -> None:
        self.posted: list[int] = []

    async def limit_reached(self, identity: Identity, notice: LimitNotice) -> tuple[str, str] | None:
        self.posted.append(notice.id)
        return ("C_TEAM", f"{len(self.posted)}.0001")


class NoManagers:
    async def is_manager(self, user_id: str) -> bool:
        return False

    async def manager_ids(self) -> set[str]:
        return set()


async def test_one_limit_notice_per_identity_per_hour(db: Database) -> None:
    identity = await make_identity(db, "jane@acme.example.com", hourly=1)
    clock, notifier = Clock(), Counting()
    notices = LimitNotices(db, notifier, clock=clock, update_delay=0)
    refused = LimitDecision(False, None, "hourly", 1, clock.now + timedelta(minutes=30), 1, 1)
    for _ in range(5):
        await notices.deferred(identity, refused)
    clock.advance(minutes=59)
    await notices.deferred(identity, refused)
    assert len(notifier.posted) == 1
    assert await notices.recent(identity.id, since=clock.now - timedelta(days=1)) == 6
    clock.advance(minutes=2)  # an hour after the first: a new notice
    await notices.deferred(identity, refused)
    assert len(notifier.posted) == 2
    await notices.drain()


async def test_a_home_tab_is_republished_at_most_every_few_seconds(db: Database) -> None:
    clock = Clock()
    home = HomeService(db, Policy(NoManagers()), clock=clock)
    await home.opened("T0TEST", "U_LEAD")
    assert await home.claim_republish("U_LEAD") == 0.0  # the first change republishes at once
    wait = await home.claim_republish("U_LEAD")
    assert 0 < wait <= REPUBLISH_EVERY.total_seconds()  # another within the interval waits
    clock.advance(seconds=REPUBLISH_EVERY.total_seconds())
    assert await home.claim_republish("U_LEAD") == 0.0
    assert await home.viewers("T0TEST") == [("U_LEAD", 0)] and await home.viewers("T0THER") == []
