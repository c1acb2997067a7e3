"""Persistence: SQLAlchemy 2 typed models, engine/session setup and Alembic migrations. Knows nothing else."""

from models.base import Base
from models.db import Database, normalize_database_url
from models.enums import (
    Attribution,
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
    SentMessage,
    SentRecipient,
    Suppression,
    VerificationStep,
)

__all__ = [
    "Attribution",
    "AuditEvent",
    "GatewayCredential",
    "InboundMessage",
    "OtpChallenge",
    "SentMessage",
    "SentRecipient",
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
    "MessageKind",
    "OtpCloseReason",
    "SlotState",
    "SmtpSecurity",
    "SuppressionReason",
    "normalize_database_url",
]
