"""Throughput of the submission gateway, with the sliding-window limit check and without it.

    python benchmarks/gateway.py [--messages N] [--connections K] [--per-connection M]
                                 [--database sqlite|postgresql|both] [--database-url URL]

Starts a gateway on loopback with a relay that accepts at once (no network), and sends N messages (one recipient
each) from K concurrent connections in a separate client process, each connection authenticating once and sending M
messages. An identity may send at most 250 emails a day (a schema constraint), so the load is spread over several
identities with limits of 250/250 and at most 240 messages each: nothing is refused, and the difference between the
two runs is the cost of the check (a locked count + insert per recipient at RCPT, and the settle after the relay).
Platform mail is not signed here (no DKIM key), so signing is not in these figures. Measures SQLite and
PostgreSQL (a scratch database created for the run and dropped after it; skipped when none is reachable); or pass
--database-url of an existing SCRATCH database (identities it creates are deleted at the end, the audit events of
their credentials stay, as audit events do).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402
from scratch_db import drop_database, prepare_database  # noqa: E402
from sqlalchemy import delete  # noqa: E402

from bot.mail.copies import Copy, CopyResult, CopyStatus  # noqa: E402
from bot.mail.domains import PlatformDomains  # noqa: E402
from bot.services.gateway import Dispatcher, GatewayCredentials, Submission, Unsubscribes  # noqa: E402
from bot.services.gateway.window import Delivered, LimitDecision, SendingLimits  # noqa: E402
from bot.services.secrets import SecretBox  # noqa: E402
from bot.smtp.gateway import SubmissionGateway  # noqa: E402
from models import Database, Identity, IdentityKind, IdentityStatus  # noqa: E402

PER_IDENTITY = 240
RECIPIENT = "lead@customer.example.org"


BOX = SecretBox([Fernet.generate_key().decode()])


class NoLimits(SendingLimits):
    """The same gateway with the check off: every recipient is allowed and nothing is written."""

    async def reserve(self, identity: Identity, recipient: str) -> LimitDecision:
        return LimitDecision(True, 0, None, None, None, 0, 0)

    async def settle(self, delivered: Sequence[Delivered], released: Sequence[int]) -> None:
        return None


@dataclass(frozen=True)
class Job:
    """One connection's worth of work: log in as `username`, send `count` messages as `sender`."""

    username: str
    password: str
    sender: str
    count: int


@dataclass(frozen=True)
class LoadResult:
    accepted: int
    refused: int
    seconds: float


async def _accept(identity: Identity, copies: list[Copy]) -> list[CopyResult]:
    return [CopyResult(c.recipient, CopyStatus.ACCEPTED, 250) for c in copies]


def _message(sender: str, i: int) -> bytes:
    body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n") * 24  # ~2 KB
    return f"From: {sender}\r\nTo: {RECIPIENT}\r\nSubject: bench {i}\r\n\r\n{body}".encode()


def run_load(port: int, jobs: list[Job], connections: int) -> LoadResult:
    """In the client process: K concurrent connections work through the jobs."""
    import aiosmtplib

    async def main() -> LoadResult:
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        accepted = refused = 0

        async def worker() -> None:
            nonlocal accepted, refused
            while not queue.empty():
                job = queue.get_nowait()
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
                await client.connect(username=job.username, password=job.password)
                try:
                    for i in range(job.count):
                        try:
                            await client.sendmail(job.sender, [RECIPIENT], _message(job.sender, i))
                            accepted += 1
                        except aiosmtplib.SMTPResponseException:
                            refused += 1
                finally:
                    await client.quit()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return LoadResult(accepted, refused, time.perf_counter() - start)

    return asyncio.run(main())


async def make_jobs(db: Database, messages: int, per_connection: int) -> tuple[list[Job], list[int]]:
    """Fresh identities (limits 250/250, at most PER_IDENTITY messages each) with a credential each."""
    credentials = GatewayCredentials(db, BOX)
    jobs: list[Job] = []
    identity_ids: list[int] = []
    tag = uuid.uuid4().hex[:8]
    left = messages
    n = 0
    while left > 0:
        share = min(left, PER_IDENTITY)
        address = f"bench{n}-{tag}@platform.example.com"
        async with db.transaction() as session:
            identity = Identity(
                team_id="TBENCH",
                kind=IdentityKind.PLATFORM.value,
                display_name=f"Bench {n}",
                company_name="Bench",
                address=address,
                hourly_limit=250,
                daily_limit=250,
                forwarding_address="bench@example.com",
                notices_channel="CBENCH",
                created_by="bench",
                status=IdentityStatus.READY.value,
            )
            session.add(identity)
        identity_ids.append(identity.id)
        issued = await credentials.issue(address, actor="bench")
        while share > 0:
            count = min(share, per_connection)
            jobs.append(Job(issued.username, issued.password, address, count))
            share -= count
        left -= min(left, PER_IDENTITY)
        n += 1
    return jobs, identity_ids


async def measure(db: Database, *, check: bool, messages: int, connections: int, per_connection: int) -> LoadResult:
    jobs, identity_ids = await make_jobs(db, messages, per_connection)
    limits = SendingLimits(db) if check else NoLimits(db)
    domains = PlatformDomains("platform.example.com", "platform.example.com")
    dispatcher = Dispatcher(_accept, domains, unsubscribes=Unsubscribes(db))
    gateway = SubmissionGateway(Submission(db, GatewayCredentials(db, BOX), limits, dispatcher))
    await gateway.start("127.0.0.1", 0)
    try:
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return await loop.run_in_executor(pool, run_load, gateway.port, jobs, connections)
    finally:
        await gateway.stop()
        async with db.transaction() as session:
            await session.execute(delete(Identity).where(Identity.id.in_(identity_ids)))


async def bench(url: str, args: argparse.Namespace) -> None:
    db = Database(url)
    await db.upgrade()
    try:
        rows = []
        for check in (True, False):
            result = await measure(
                db,
                check=check,
                messages=args.messages,
                connections=args.connections,
                per_connection=args.per_connection,
            )
            rows.append(("on" if check else "off", result))
    finally:
        await db.dispose()
    backend = "SQLite" if db.is_sqlite else "PostgreSQL"
    connections_used = -(-args.messages // args.per_connection)
    print(
        f"\nsubmission gateway, {backend}: {args.messages} messages of ~2 KB, {args.connections} concurrent "
        f"connections, ~{args.per_connection} messages per connection ({connections_used}+ AUTHs)\n"
    )
    print(f"{'limit check':<12} {'accepted':>9} {'refused':>8} {'seconds':>8} {'msg/s':>8}")
    for label, r in rows:
        print(f"{label:<12} {r.accepted:>9} {r.refused:>8} {r.seconds:>8.2f} {r.accepted / r.seconds:>8.0f}")
    on, off = rows[0][1], rows[1][1]
    cost = 1 - (on.accepted / on.seconds) / (off.accepted / off.seconds)
    print(f"\nthe limit check costs {cost:.0%} of the throughput here")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=10, help="concurrent client connections")
    parser.add_argument("--per-connection", type=int, default=60, help="messages per connection (one AUTH each)")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--database-url", help="an existing database instead of a scratch one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.database_url:
        await bench(args.database_url, args)
        return
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                url, name = await prepare_database(kind, Path(tmp))
            except OSError as exc:  # PostgreSQL not running here: say so, measure the rest
                print(f"\n{kind}: skipped ({exc})")
                continue
            try:
                await bench(url, args)
            finally:
                await drop_database(name)


if __name__ == "__main__":
    asyncio.run(main())
