"""The composition root: the only place that reads Settings and constructs the world — the database, the services,
the Slack app and its listeners, the SMTP edges and the background jobs — and wires them together.

parts.py turns settings into parts (client, database, keys, DKIM, relay, OAuth providers); core.py builds the services
and the mail plumbing between them (`Core`, also what the maintenance commands use without Slack); runtime.py is what
`identity-bot run` serves (`Runtime`; tests run it in-process)."""

from __future__ import annotations

from bot.app.core import Core, build_core
from bot.app.parts import dkim_signer, gateway_endpoint, key_problem, open_database, signing_key_error
from bot.app.runtime import Runtime, serve

__all__ = [
    "Core",
    "Runtime",
    "build_core",
    "dkim_signer",
    "gateway_endpoint",
    "key_problem",
    "open_database",
    "serve",
    "signing_key_error",
]
