"""Persistence: SQLAlchemy 2 typed models, engine/session setup and Alembic migrations. Knows nothing else."""

from models.base import Base
from models.db import Database, normalize_database_url
from models.enums import (
    IdentityKind,
    IdentityStatus,
    LimitRequestStatus,
    MessageKind,
    OtpCloseReason,
    SlotState,
    SmtpSecurity,
    StepName,
    StepStatus,
    SuppressionReason,
)
from models.tables import (
    AuditEvent,
    GatewayCredential,
    Identity,
    InboundMessage,
    LimitRequest,
    OtpChallenge,
    SentRecipient,
    Suppression,
    UnsubscribeToken,
    VerificationStep,
)

__all__ = [
    "AuditEvent",
    "GatewayCredential",
    "InboundMessage",
    "OtpChallenge",
    "SentRecipient",
    "StepName",
    "StepStatus",
    "Suppression",
    "UnsubscribeToken",
    "VerificationStep",
    "Base",
    "Database",
    "Identity",
    "IdentityKind",
    "IdentityStatus",
    "LimitRequest",
    "LimitRequestStatus",
    "MessageKind",
    "OtpCloseReason",
    "SlotState",
    "SmtpSecurity",
    "SuppressionReason",
    "normalize_database_url",
]
