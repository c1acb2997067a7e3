"""What a DNS check found: ok / warning / problem / unknown, in plain language, with the record to publish."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"
    UNKNOWN = "unknown"  # the DNS server timed out or failed: we can't tell, which never means broken


# Worst first when one line sums up several findings: definite findings outrank "couldn't tell".
SEVERITY = {Status.PROBLEM: 3, Status.WARNING: 2, Status.UNKNOWN: 1, Status.OK: 0}


@dataclass(frozen=True)
class CheckResult:
    check: str  # "spf" | "dmarc" | "dkim"
    subject: str  # what was checked: the domain, a sending host, the selectors
    status: Status
    message: str  # plain language, for the person who owns the domain
    fix: str | None = None  # the exact zone-file record(s) to publish, when publishing fixes it
    details: tuple[str, ...] = field(default=())  # per-address / per-selector findings


class Unknown(Exception):
    """The DNS server did not give a usable answer (timeout, SERVFAIL, refused): we can't tell."""
