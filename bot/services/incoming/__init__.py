"""Incoming mail: accepting it (store), processing it (pipeline, judged in worker processes, worked through by the
drain), attributing reports to mail the team sent, its rules chain, forwarding leads, and the processing locks that
make each message processed once across processes."""

from bot.services.incoming.drain import Drain
from bot.services.incoming.pipeline import IncomingMail, LeadForwarder
from bot.services.incoming.store import InboundStore
from bot.services.incoming.workers import InlineJudge, JudgePool

__all__ = ["Drain", "InboundStore", "IncomingMail", "InlineJudge", "JudgePool", "LeadForwarder"]
