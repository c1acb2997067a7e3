"""Who may do what: decided here, once, from the acting Slack user's id (taken from the verified request, never
from text someone typed) and the managers' directory that the Slack side implements.

- Anyone in the workspace may create identities and look at them.
- An identity's creator and managers may change it: edit its settings, change its limits.
- Only managers decide limit requests, and never their own.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from bot.services.errors import NotAllowed
from models import Identity, LimitRequest


class ManagerDirectory(Protocol):
    """Who the managers are (MANAGERS: user IDs and user groups, resolved by the Slack side)."""

    async def is_manager(self, user_id: str) -> bool: ...

    async def manager_ids(self) -> set[str]: ...


class Role(StrEnum):
    CREATOR = "creator"
    MANAGER = "manager"
    ANYONE = "anyone"


class Policy:
    def __init__(self, managers: ManagerDirectory) -> None:
        self.managers = managers

    async def role(self, actor: str, identity: Identity) -> Role:
        """The actor's strongest role for this identity (a manager who created it acts as a manager)."""
        if await self.managers.is_manager(actor):
            return Role.MANAGER
        return Role.CREATOR if identity.created_by == actor else Role.ANYONE

    async def may_change(self, actor: str, identity: Identity) -> bool:
        """Edit its settings or change its limits: its creator and managers."""
        return await self.role(actor, identity) in (Role.CREATOR, Role.MANAGER)

    async def require_change(self, actor: str, identity: Identity, what: str = "change it") -> None:
        if not await self.may_change(actor, identity):
            raise NotAllowed(f"Only the identity's creator or a manager can {what}.")

    async def require_decide(self, actor: str, request: LimitRequest) -> None:
        """Decide a limit request: managers only, and not their own request."""
        if not await self.managers.is_manager(actor):
            raise NotAllowed("Only managers can decide limit requests.")
        if request.requested_by == actor:
            raise NotAllowed("You can't decide your own request: another manager has to.")
