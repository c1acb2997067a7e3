"""A "null" SMTP server for benchmarks: aiosmtpd answering 250 to every message without storing it. Used as the
baseline the inbound server is compared with, and as the relay that receives the forwarded leads.

Prints one JSON line when ready ({"smtp_port": N}); on SIGTERM prints {"messages": n} and exits."""

from __future__ import annotations

import asyncio
import json
import signal

from aiosmtpd.smtp import SMTP


class Counting:
    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server: SMTP, session: object, envelope: object) -> str:
        self.messages += 1
        return "250 2.0.0 Ok"


async def main() -> None:
    loop = asyncio.get_running_loop()
    handler = Counting()
    # hostname given: otherwise aiosmtpd resolves the machine's name for every connection.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="null.bench", ident="null"), "127.0.0.1", 0, backlog=1024
    )
    print(json.dumps({"smtp_port": server.sockets[0].getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    print(json.dumps({"messages": handler.messages}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
