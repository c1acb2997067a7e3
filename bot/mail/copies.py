"""Relaying one copy of a message per recipient, and how each copy fared.

The gateway sends every recipient its own copy (its own return path and unsubscribe link, and for platform mail its
own DKIM signature over exactly those bytes). The copies go as consecutive transactions over one SMTP session, the
bytes unchanged (aiosmtplib's `sendmail` only normalises line ends and dot-stuffs, which DKIM does not see)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import aiosmtplib

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
MAX_REPLY = 200


class CopyStatus(StrEnum):
    ACCEPTED = "accepted"  # the server took the copy for its recipient
    REFUSED = "refused"  # the server answered this copy with an error (its RCPT or its DATA)
    FAILED = "failed"  # no answer for this copy: the session failed (connection, TLS, AUTH, MAIL FROM, cut off)


@dataclass(frozen=True)
class Copy:
    """One recipient's copy: the envelope sender (MAIL FROM), the recipient, the exact bytes to send."""

    sender: str
    recipient: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class CopyResult:
    recipient: str
    status: CopyStatus
    code: int = 0  # the server's reply code, 0 when there was none
    reply: str = ""  # the server's reply text, cleaned (one line of printable ASCII, bounded)

    @property
    def permanent(self) -> bool:
        """A refusal the server means for good (5xx): sending the same copy again would be refused again."""
        return self.status == CopyStatus.REFUSED and 500 <= self.code <= 599


def clean_reply(text: str) -> str:
    """A server's reply text made safe to quote in a reply or a report: one line, printable ASCII, bounded."""
    return _UNPRINTABLE.sub(" ", text).strip()[:MAX_REPLY]


def refused(copies: Sequence[Copy], reply: str, code: int) -> list[CopyResult]:
    """Every copy refused for good, with one reply (the session could not be opened for a reason only a person can
    fix, e.g. a revoked sign-in or a changed password)."""
    return [CopyResult(c.recipient, CopyStatus.REFUSED, code, clean_reply(reply)) for c in copies]


def failed(copies: Sequence[Copy], reply: str, code: int = 0) -> list[CopyResult]:
    """Every copy failed without an answer of its own (e.g. the session could not be opened)."""
    return [CopyResult(c.recipient, CopyStatus.FAILED, code, clean_reply(reply)) for c in copies]


async def send_copies(client: aiosmtplib.SMTP, copies: Sequence[Copy], *, timeout: float) -> list[CopyResult]:
    """One transaction per copy on a session that is ready for MAIL (greeted, TLS, logged in). Each transaction
    gets `timeout` seconds. A refusal of one copy does not stop the others; a lost or stuck session fails the copy
    in flight and every copy after it."""
    results: list[CopyResult] = []
    for index, copy in enumerate(copies):
        try:
            async with asyncio.timeout(timeout):
                await client.sendmail(copy.sender, [copy.recipient], copy.data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0]
            results.append(_result(copy, CopyStatus.REFUSED, refusal.code, refusal.message))
        except aiosmtplib.SMTPDataError as exc:
            results.append(_result(copy, CopyStatus.REFUSED, exc.code, exc.message))
        except aiosmtplib.SMTPResponseException as exc:  # MAIL FROM refused, or an unexpected reply
            results.append(_result(copy, CopyStatus.FAILED, exc.code, exc.message))
        except ValueError:  # an address aiosmtplib will not put on the wire
            results.append(_result(copy, CopyStatus.FAILED, 0, "address not accepted for sending"))
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else "connection lost"
            results += failed(copies[index:], reason)
            break
        else:
            results.append(CopyResult(copy.recipient, CopyStatus.ACCEPTED, 250))
    return results


def _result(copy: Copy, status: CopyStatus, code: int, message: str) -> CopyResult:
    return CopyResult(copy.recipient, status, code, clean_reply(message))
