"""Persistence: SQLAlchemy 2 typed models, engine/session setup and Alembic migrations. Knows nothing else."""

from models.base import Base
from models.db import Database, normalize_database_url
from models.tables import (
    AuditEvent,
    Identity,
    IdentityKind,
    IdentityStatus,
    LimitRequest,
    LimitRequestStatus,
)

__all__ = [
    "AuditEvent",
    "Base",
    "Database",
    "Identity",
    "IdentityKind",
    "IdentityStatus",
    "LimitRequest",
    "LimitRequestStatus",
    "normalize_database_url",
]
