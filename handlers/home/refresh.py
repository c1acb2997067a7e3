"""Keeping the Home tab true: when something it shows changes for a team (any notifier event about one of its
identities, or mail sent as one), the Home tab of each of the team's viewers is republished — at once, or when the
few seconds since the last republish have passed (the claim is in the database, so across processes too). A change
arriving while a republish waits is covered by it: it reads the state when it runs."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.services.registry import Services
from handlers.home.views import home_view
from models import Identity

log = logging.getLogger(__name__)


class HomeRefresh:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self.services: Services | None = None  # bound once the services exist (they report through the notifier)
        self._waiting: dict[str, asyncio.Task[None]] = {}
        self._teams: set[str] = set()  # teams whose viewers are being looked up: a burst of changes costs one lookup
        self._tasks: set[asyncio.Future[Any]] = set()

    def bind(self, services: Services) -> None:
        self.services = services

    async def publish(self, team_id: str, user_id: str, page: int = 0) -> None:
        """Publish the user's Home tab now."""
        assert self.services is not None
        overview = await self.services.home.overview(team_id, user_id, page)
        await self.client.views_publish(user_id=user_id, view=home_view(overview))

    def changed(self, team_id: str) -> None:
        """Something the team's Home tabs show changed (best effort, in the background)."""
        if self.services is None or team_id in self._teams:
            return
        self._teams.add(team_id)
        self._spawn(self._republish_team(team_id))

    async def _republish_team(self, team_id: str) -> None:
        if self.services is None:
            return
        try:
            viewers = await self.services.home.viewers(team_id)
        finally:
            self._teams.discard(team_id)  # changes from now on are covered by the republishes below or their own
        for user_id, page in viewers:
            if user_id not in self._waiting:
                task = self._waiting[user_id] = asyncio.ensure_future(self._republish(team_id, user_id, page))
                task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for user_id, waiting in list(self._waiting.items()):
            if waiting is task:
                del self._waiting[user_id]

    async def _republish(self, team_id: str, user_id: str, page: int) -> None:
        if self.services is None:
            return
        try:
            while (wait := await self.services.home.claim_republish(user_id)) > 0:
                await asyncio.sleep(wait)
            self._waiting.pop(user_id, None)  # a change from now on needs a republish of its own
            page = await self.services.home.page_of(user_id, default=page)
            await self.publish(team_id, user_id, page)
        except Exception:  # noqa: BLE001 - the next change or opening the tab publishes it again
            log.exception("could not republish the Home tab of %s", user_id)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(work: Any) -> None:
        try:
            await work
        except Exception:  # noqa: BLE001
            log.exception("Home tab refresh failed")

    async def stop(self) -> None:
        self.services = None  # changes reported from now on (the gateway draining) publish nothing
        for task in [*self._tasks, *self._waiting.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._waiting.values(), return_exceptions=True)


class HomeAwareNotifier:
    """The Notifier, telling HomeRefresh about every event that concerns an identity (its team's Home tabs show it):
    wraps each coroutine method of the inner notifier, so events added later refresh the Home tab too."""

    def __init__(self, inner: object, refresh: HomeRefresh) -> None:
        self._inner = inner
        self._refresh = refresh

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return self._wrap(attribute)

    def _wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            finally:
                team = next((a.team_id for a in (*args, *kwargs.values()) if isinstance(a, Identity)), None)
                if team is not None:
                    self._refresh.changed(team)

        return wrapped
