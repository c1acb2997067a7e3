"""Who may do what: decided here, once, from the acting Slack user's id (taken from the verified request, never
from text someone typed) and the managers' directory that the Slack side implements.

- Anyone in the workspace may create identities and look at them (`/identity show`, `list`, the panel).
- An identity's creator and managers may act on it: run its verification steps, ask for and enter its one-time
  passwords, edit it, change its limits, re-run its health checks, disable, enable or delete it, get its SMTP
  credentials (`IdentityAction`). Everyone else sees its panel read-only.
- Only managers decide limit requests, and never their own; only managers resume a paused identity or end a
  time-boxed increase early.
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


class IdentityAction(StrEnum):
    """What only an identity's creator and managers may do with it (the views word each one)."""

    RUN_STEPS = "run_steps"  # Send Test Email, Send Response Email
    SEND_CODE = "send_code"  # Send Test Response Email (a one-time password to the forwarding address)
    ENTER_CODE = "enter_code"  # the OTP modal
    EDIT = "edit"  # the identity form, and its Test email setup
    CHANGE_LIMITS = "change_limits"
    RERUN_CHECKS = "rerun_checks"  # Re-run checks (the identity's health checks)
    RESUME = "resume"  # Resume a paused identity: managers only
    DISABLE = "disable"  # /identity disable (and enable again)
    DELETE = "delete"
    CREDENTIALS = "credentials"  # Get SMTP credentials (issuing again revokes the previous ones)


# Actions the identity's creator may not do on their own identity: a manager has to.
MANAGERS_ONLY = frozenset({IdentityAction.RESUME})


class NotPermitted(NotAllowed):
    """The actor is neither the identity's creator nor a manager. Carries what the views need to say so."""

    def __init__(self, action: IdentityAction, identity: Identity) -> None:
        self.managers_only = action in MANAGERS_ONLY
        who = "a manager" if self.managers_only else "the identity's creator or a manager"
        super().__init__(f"Only {who} can do this ({action}).")
        self.action = action
        self.creator = identity.created_by
        self.address = identity.address


class Policy:
    def __init__(self, managers: ManagerDirectory) -> None:
        self.managers = managers

    async def may(self, actor: str, identity: Identity, action: IdentityAction) -> bool:
        """The creator (decided without asking Slack) or a manager; a manager only for MANAGERS_ONLY actions."""
        if action in MANAGERS_ONLY:
            return await self.managers.is_manager(actor)
        return identity.created_by == actor or await self.managers.is_manager(actor)

    async def require(self, actor: str, identity: Identity, action: IdentityAction) -> None:
        """Raise NotPermitted unless the actor may do `action` with the identity."""
        if not await self.may(actor, identity, action):
            raise NotPermitted(action, identity)

    async def require_manager(self, actor: str, what: str) -> None:
        """Managers only (e.g. ending a time-boxed increase early): NotAllowed naming `what` otherwise."""
        if not await self.managers.is_manager(actor):
            raise NotAllowed(f"Only managers can {what}.")

    async def require_decide(self, actor: str, request: LimitRequest) -> None:
        """Decide a limit request: managers only, and not their own request."""
        if not await self.managers.is_manager(actor):
            raise NotAllowed("Only managers can decide limit requests.")
        if request.requested_by == actor:
            raise NotAllowed("You can't decide your own request: another manager has to.")
