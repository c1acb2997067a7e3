"""Persistence: SQLAlchemy 2 typed models, engine/session setup and Alembic migrations. Knows nothing else."""

from models.base import Base
from models.db import Database, normalize_database_url
from models.tables import (
    AuditEvent,
    GatewayCredential,
    Identity,
    IdentityKind,
    IdentityStatus,
    InboundMessage,
    LimitRequest,
    LimitRequestStatus,
    OtpChallenge,
    SentMessage,
    StepName,
    StepStatus,
    Suppression,
    VerificationStep,
)

__all__ = [
    "AuditEvent",
    "GatewayCredential",
    "InboundMessage",
    "OtpChallenge",
    "SentMessage",
    "StepName",
    "StepStatus",
    "Suppression",
    "VerificationStep",
    "Base",
    "Database",
    "Identity",
    "IdentityKind",
    "IdentityStatus",
    "LimitRequest",
    "LimitRequestStatus",
    "normalize_database_url",
]
