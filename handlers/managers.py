"""The Slack side of the services' managers directory (services/policy.py).

MANAGERS lists user IDs (U…) and user-group IDs (S…); groups are resolved through the Web API
(usergroups.users.list) and cached briefly. A failed lookup is not cached, so one transient error does not lock
group managers out for minutes."""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class SlackManagerDirectory:
    def __init__(self, client: AsyncWebClient, ids: tuple[str, ...], *, ttl: float = 300.0) -> None:
        self.client = client
        self.users = {i for i in ids if not i.startswith("S")}
        self.groups = [i for i in ids if i.startswith("S")]
        self.ttl = ttl
        self._groups_cache: tuple[float, set[str]] | None = None

    async def _group_members(self) -> set[str]:
        if not self.groups:
            return set()
        if self._groups_cache and time.monotonic() - self._groups_cache[0] < self.ttl:
            return set(self._groups_cache[1])
        members: set[str] = set()
        complete = True
        for group in self.groups:
            try:
                resp = await self.client.usergroups_users_list(usergroup=group)
                members.update(resp.get("users") or [])
            except SlackApiError as exc:
                complete = False
                log.warning("could not resolve user group %s: %s", group, exc.response.get("error"))
        if complete:
            self._groups_cache = (time.monotonic(), members)
        return members

    async def manager_ids(self) -> set[str]:
        """Every manager's user ID (listed directly or through a user group)."""
        return self.users | await self._group_members()

    async def is_manager(self, user_id: str) -> bool:
        return user_id in self.users or user_id in await self._group_members()
