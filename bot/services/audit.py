"""The append-only audit trail: every change, verification result and decision, with who and when."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models import AuditEvent


def record(session: AsyncSession, *, actor: str, action: str, identity_id: int | None, **detail: Any) -> None:
    """Add an audit event to the session's transaction. Callers must never pass secrets in `detail`."""
    session.add(AuditEvent(actor=actor, action=action, identity_id=identity_id, detail=detail))
