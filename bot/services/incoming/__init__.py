"""Incoming mail: accepting it (store), processing it (pipeline, judged in worker processes, worked through by the
drain), attributing reports to mail the team sent, its rules chain, forwarding leads, and the processing locks that
make each message processed once across processes."""

# Names are loaded on first use (bot/services/lazy.py): the inbound door imports only the parts it needs.
from __future__ import annotations

from typing import TYPE_CHECKING

from bot.services.lazy import exports

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


__getattr__ = exports(__name__, _EXPORTS)
