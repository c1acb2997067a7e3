"""Who is a manager: MANAGERS lists user IDs (U…) and user-group IDs (S…); groups are resolved through the
Web API (usergroups.users.list) and cached briefly."""

from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class ManagerDirectory:
    def __init__(self, client: AsyncWebClient, ids: tuple[str, ...], *, ttl: float = 300.0) -> None:
        self.client = client
        self.users = {i for i in ids if not i.startswith("S")}
        self.groups = [i for i in ids if i.startswith("S")]
        self.ttl = ttl
        self._cache: tuple[float, set[str]] | None = None

    async def manager_ids(self) -> set[str]:
        """Every manager's user ID (listed directly or through a user group)."""
        if self._cache and time.monotonic() - self._cache[0] < self.ttl:
            return set(self._cache[1])
        members = set(self.users)
        for group in self.groups:
            try:
                resp = await self.client.usergroups_users_list(usergroup=group)
                members.update(resp.get("users") or [])
            except SlackApiError as exc:
                log.warning("could not resolve user group %s: %s", group, exc.response.get("error"))
        self._cache = (time.monotonic(), members)
        return set(members)

    async def is_manager(self, user_id: str) -> bool:
        return user_id in await self.manager_ids()
