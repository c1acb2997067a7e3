"""Incoming mail: accepting it (store), processing it (pipeline), its rules chain, forwarding leads, and the
processing locks that make each message processed once across processes."""

from bot.services.incoming.pipeline import IncomingMail, LeadForwarder
from bot.services.incoming.store import InboundStore

__all__ = ["InboundStore", "IncomingMail", "LeadForwarder"]
