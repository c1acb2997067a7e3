"""The inbound server in a process of its own ("the door"), so a flood of mail never delays Slack's acks.

The door is the one part anyone on the internet can talk to, and under load it keeps an event loop busy. Slack must
be acknowledged within 3 s whatever the inbound traffic, so `identity-bot run` serves SMTP from a child process
(`python -m bot.door`, its configuration as one JSON line on stdin): it accepts, commits each message before
answering 250 (InboundStore), and tells the parent on its stdout:

    ready <host> <port>     listening
    stored <id>             a new message is committed (the parent wakes its processing drain)
    busy 0|1                SMTP sessions are open or not (the parent's drain trickles while they are)

Processing (judging in the worker pool, attributing, forwarding) stays in the parent. The child stops when its stdin
closes (the parent stopped, or died: a SIGKILLed bot leaves no door behind) after letting stores in flight finish; a
child that dies on its own is logged and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from bot.logs import setup_logging
from bot.mail.domains import PlatformDomains
from bot.services.gateway.unsubscribe import Unsubscribes
from bot.services.incoming import InboundStore
from bot.smtp.inbound import InboundServer
from models import Database

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
BIND_RETRY_SECONDS = 10.0
RESPAWN_DELAY = 1.0


@dataclass(frozen=True)
class DoorConfig:
    """What the child needs (plain values: it gets them as JSON on its command line)."""

    database_url: str
    platform_domain: str
    tracking_domain: str
    host: str
    port: int
    tls_cert: str | None
    tls_key: str | None
    log_level: str


class DoorProcess:
    """The parent's side: start the child, relay its notices, stop it. Has the `host`/`port` of an InboundServer."""

    def __init__(self, config: DoorConfig, *, on_stored: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.on_stored = on_stored
        self.host = ""
        self.port = 0
        self.sessions_open = False
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[tuple[str, int]] | None = None
        self._notices: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def busy(self) -> bool:
        return self.sessions_open

    async def spawn(self) -> None:
        """Start the child (returns at once; `wait_ready` waits for it to listen)."""
        self._ready = asyncio.get_running_loop().create_future()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.door", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        # The configuration goes in on stdin, never on the command line: any local user can read a process's
        # arguments, and DATABASE_URL may hold the database's password.
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(asdict(self.config)).encode() + b"\n")
        await self._proc.stdin.drain()
        self._reader = asyncio.create_task(self._read())

    async def wait_ready(self) -> None:
        assert self._ready is not None
        try:
            self.host, self.port = await asyncio.wait_for(asyncio.shield(self._ready), READY_TIMEOUT)
        except TimeoutError:
            raise RuntimeError("the inbound server process did not start") from None

    async def start(self, host: str = "", port: int = 0) -> None:
        """InboundServer's interface (the address is the config's)."""
        if self._proc is None:
            await self.spawn()
        await self.wait_ready()

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            word, _, rest = line.decode(errors="replace").strip().partition(" ")
            if word == "stored" and rest.isdigit() and self.on_stored is not None:
                task = asyncio.ensure_future(self.on_stored(int(rest)))
                self._notices.add(task)
                task.add_done_callback(self._notices.discard)
            elif word == "busy":
                self.sessions_open = rest == "1"
            elif word == "ready":
                host, _, port = rest.rpartition(" ")
                self.host, self.port = host, int(port)
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result((host, int(port)))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError("the inbound server process exited"))
        self.sessions_open = False
        await self._replace_if_died()

    async def _replace_if_died(self) -> None:
        """The child exited while we did not ask it to: log it and start another (after a moment)."""
        proc = self._proc
        if self._stopping or proc is None:
            return
        code = await proc.wait()
        log.error("the inbound server process exited on its own (exit code %s); starting another", code)
        await asyncio.sleep(RESPAWN_DELAY)
        if not self._stopping and self._proc is proc:
            await self.spawn()

    async def stop(self) -> None:
        """Close the child's stdin (it stops accepting and lets stores in flight finish); kill it if it lingers."""
        self._stopping = True
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()


# ---------------------------------------------------------------------------------------------------------------
# The child


async def _serve(config: DoorConfig) -> None:
    out = sys.stdout

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    async def stored(message_id: int) -> None:
        say(f"stored {message_id}")

    db = Database(config.database_url)
    domains = PlatformDomains(config.platform_domain, config.tracking_domain)
    store = InboundStore(db, domains, on_stored=stored, unsubscribes=Unsubscribes(db))
    tls = None
    if config.tls_cert and config.tls_key:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(config.tls_cert, config.tls_key)
    server = InboundServer(store, tls_context=tls)
    await _bind(server, config)
    say(f"ready {server.host} {server.port}")
    watcher = asyncio.create_task(_report_busy(server, say))
    try:
        await _until_stdin_closes()
    finally:
        watcher.cancel()
        await server.stop()
        await db.dispose()


async def _bind(server: InboundServer, config: DoorConfig) -> None:
    """Listen; retry a moment if the address is still held (a door of a bot that was just killed, closing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BIND_RETRY_SECONDS
    while True:
        try:
            await server.start(config.host, config.port)
            return
        except OSError:
            if config.port == 0 or loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _report_busy(server: InboundServer, say: Callable[[str], Any]) -> None:
    last = False
    while True:
        now = server.gate.open > 0
        if now != last:
            say(f"busy {int(now)}")
            last = now
        await asyncio.sleep(0.02)


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


def main(argv: list[str]) -> int:
    config = DoorConfig(**json.loads(sys.stdin.buffer.readline()))
    setup_logging(config.log_level)
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
