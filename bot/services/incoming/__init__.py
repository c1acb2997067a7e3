"""Incoming mail: accepting it (store), processing it (pipeline, judged in worker processes, worked through by the
drain), attributing reports to mail the team sent, its rules chain, forwarding leads, and the processing locks that
make each message processed once across processes."""

# Names are loaded on first use (PEP 562), so a process that needs one part (the inbound door needs the store and
# unsubscribe tokens, not the OAuth client or DKIM) does not import the rest.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.services.incoming.drain import Drain
    from bot.services.incoming.pipeline import IncomingMail, LeadForwarder
    from bot.services.incoming.store import InboundStore
    from bot.services.incoming.workers import InlineJudge, JudgePool

_EXPORTS = {
    "Drain": "bot.services.incoming.drain",
    "IncomingMail": "bot.services.incoming.pipeline",
    "LeadForwarder": "bot.services.incoming.pipeline",
    "InboundStore": "bot.services.incoming.store",
    "InlineJudge": "bot.services.incoming.workers",
    "JudgePool": "bot.services.incoming.workers",
}
__all__ = [
    "Drain",
    "InboundStore",
    "IncomingMail",
    "InlineJudge",
    "JudgePool",
    "LeadForwarder",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
