"""Judging a stored message: classify it and, for a lead, build its forward. Pure CPU work on untrusted input, so it
runs in a worker process (see workers.JudgePool), never on the event loop, and within the parsing limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.mail.mime import LimitExceeded, MimeLimits
from bot.services.incoming.forwarding import ForwardTarget, Original, build_forward
from bot.services.incoming.rules import Classification, classify
from models import MessageKind

OVER_LIMIT = "over-limit"


@dataclass(frozen=True)
class Job:
    original: Original
    mail_from: str  # the envelope sender ('' for a null reverse path)
    target: ForwardTarget | None  # where a lead goes; None: classify only
    limits: MimeLimits = field(default_factory=MimeLimits)


@dataclass(frozen=True)
class Verdict:
    classification: Classification
    over_limit: str | None = None  # which limit the message is over, if any
    forward: bytes | None = None  # a lead's forward on the wire


def judge(job: Job) -> Verdict:
    """Classify; a message over a limit is judged by its headers alone: a report or other machine mail by its
    headers is not forwarded, anything else is a lead (a person gets to see it), forwarded with the original
    attached untouched."""
    try:
        verdict = classify(job.original.raw, mail_from=job.mail_from, limits=job.limits)
        over = None
    except LimitExceeded as exc:
        over = exc.limit
        verdict = _by_headers(job)
    forward = None
    if verdict.kind == MessageKind.LEAD and job.target is not None:
        try:
            forward = build_forward(job.target, job.original, over_limit=over)
        except LimitExceeded as exc:  # the body read for the preview went over the decoded-size limit
            over = exc.limit
            forward = build_forward(job.target, job.original, over_limit=over)
    return Verdict(verdict, over, forward)


def header_block(raw: bytes, limit: int = 65536) -> bytes:
    """The header section of a raw message (at most `limit` bytes of it), ending with an empty line."""
    head = raw[:limit]
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end >= 0:
            return head[: end + len(separator)]
    return head + b"\r\n\r\n"


def _by_headers(job: Job) -> Classification:
    """The rules chain on the headers alone (no body, no parts)."""
    try:
        verdict = classify(header_block(job.original.raw), mail_from=job.mail_from, limits=job.limits)
    except LimitExceeded:
        return Classification(MessageKind.LEAD, OVER_LIMIT)
    return Classification(verdict.kind, f"{OVER_LIMIT}:{verdict.rule}"[:64], tokens=verdict.tokens)
