"""Slack ack latency while the submission gateway is flooded with wrong AUTHs.

    python benchmarks/auth_flood.py [--bursts N] [--interval SECONDS]

Runs the whole bot in this process (HTTP mode, the local Slack emulator in place of slack.com, SQLite in a temporary
directory) and measures the ack time of a signed `/identity help` slash command, one every `--interval` seconds:
idle (the baseline: 100 probes before every burst, so it shares the machine's load of the moment) and while a
separate client process sends bursts of 200 wrong AUTHs
from 20 concurrent connections (the gateway cuts a connection after 3 AUTHs, so each connection's worker reconnects)
at a real credential's username; the probes of all bursts of a row are pooled. The floods:

- as shipped: the keyed hash (HMAC-SHA-256) and a refused AUTH answered after AUTH_FAILURE_DELAY (1 s), so each
  connection tries at most one password a second;
- keyed hash without the pause: what the hash alone does (each wrong AUTH still costs a database lookup and SMTP
  handling, ~1-3 ms of the event loop);
- scrypt, as before: every AUTH checked with scrypt (16 MiB, ~35 ms), unbounded in the thread pool, no pause, as
  the gateway did before (reproduced by a subclass of the credential check);
- legacy row: as shipped, aimed at a credential that still holds a scrypt hash from before (until its next good
  login): wrong AUTHs against it run scrypt, one at a time, after the pause.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import update  # noqa: E402

from bot.app import Runtime  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.sandbox import FakeSlack, SlackClient  # noqa: E402
from bot.services.gateway.credentials import GatewayCredentials, hash_password, verify_password  # noqa: E402
from models import GatewayCredential, Identity, IdentityKind, IdentityStatus  # noqa: E402

TOKEN = "xoxb-bench"  # the local emulator accepts it; not a real token
SECRET = "bench-signing-secret"
ADDRESS = "bench@platform.example.com"
CONNECTIONS = 20
ATTEMPTS_PER_ROUND = 200


class ScryptAsBefore(GatewayCredentials):
    """The check as it was: scrypt for every AUTH (a dummy hash for unknown users), any number at once."""

    async def authenticate(self, username: str, password: str) -> int | None:
        await asyncio.to_thread(verify_password, password, _BEFORE_HASH)
        return None


_BEFORE_HASH = hash_password("the real password")


def flood(port: int, username: str, rounds: int) -> tuple[int, float]:
    """In the client process: `rounds` x 200 wrong AUTHs over 20 concurrent connection workers."""
    import aiosmtplib

    async def worker(attempts: int) -> int:
        done = 0
        while done < attempts:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
            await client.connect()
            await client.ehlo()
            try:
                for _ in range(min(3, attempts - done)):
                    try:
                        await client.auth_plain(username, "wrong password")
                    except aiosmtplib.SMTPAuthenticationError:
                        pass
                    done += 1
            finally:
                client.close()
        return done

    async def main() -> tuple[int, float]:
        started = time.perf_counter()
        total = 0
        for _ in range(rounds):
            share = ATTEMPTS_PER_ROUND // CONNECTIONS
            total += sum(await asyncio.gather(*(worker(share) for _ in range(CONNECTIONS))))
        return total, time.perf_counter() - started

    return asyncio.run(main())


async def probe_while(
    probe: Callable[[], Awaitable[float]], running: Callable[[], bool], interval: float, *, least: int = 0
) -> list[float]:
    """Probe every `interval` seconds while `running()` (and at least `least` times)."""
    latencies: list[float] = []
    while running() or len(latencies) < least:
        latencies.append(await probe())
        await asyncio.sleep(interval)
    return latencies


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] * 1000

    return {
        "n": len(ordered),
        "p50": pct(50),
        "p99": pct(99),
        "max": ordered[-1] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


async def run(bursts: int, interval: float) -> None:
    logging.basicConfig(level=logging.WARNING)
    fake = FakeSlack(token=TOKEN)
    await fake.start()
    fake.add_user("U_LEAD")
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake.url,
            "PORT": "0",
            "DATA_DIR": tmp,
            "PLATFORM_DOMAIN": "platform.example.com",
            "INBOUND_SMTP": "127.0.0.1:0",
            "SUBMISSION_SMTP": "127.0.0.1:0",
            "LOG_LEVEL": "ERROR",
        }
        runtime = Runtime(load_settings(env))
        await runtime.start()
        logging.getLogger().setLevel(logging.ERROR)
        try:
            await measure(runtime, fake, bursts, interval)
        finally:
            await runtime.stop()
            await fake.stop()


async def measure(runtime: Runtime, fake: FakeSlack, bursts: int, interval: float) -> None:
    # Long on purpose: one measurement, start to finish (an identity, a flood of bad AUTH, the /healthz probes).
    assert runtime.http_url
    async with runtime.db.transaction() as session:
        session.add(
            Identity(
                team_id="TBENCH",
                kind=IdentityKind.PLATFORM,
                display_name="Bench",
                company_name="Bench",
                address=ADDRESS,
                forwarding_address="bench@example.com",
                notices_channel="CBENCH",
                created_by="bench",
                status=IdentityStatus.READY,
            )
        )
    issued = await runtime.services.credentials.issue(ADDRESS, actor="bench")
    slack = SlackClient(runtime.http_url, SECRET, fake)
    submission = runtime.gateway.handler.submission

    async def ack() -> float:
        response = await slack.command("help", user="U_LEAD")
        assert response.ok, response
        return response.elapsed

    for _ in range(20):  # warm up: connections, caches
        await ack()
    rows: list[tuple[str, dict[str, float], str]] = []
    idle: list[float] = []

    loop = asyncio.get_running_loop()
    handler = runtime.gateway.handler
    shipped_pause = handler.auth_failure_delay
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        await loop.run_in_executor(pool, flood, runtime.gateway.port, issued.username, 1)  # start the worker up
        keyed = submission.credentials
        variants = [
            ("as shipped", keyed, shipped_pause, max(1, bursts // 3)),
            ("keyed, no pause", keyed, 0.0, bursts),
            ("scrypt, as before", ScryptAsBefore(runtime.db, keyed.box), 0.0, 1),
        ]
        for label, credentials, pause, n in variants:
            submission.credentials, handler.auth_failure_delay = credentials, pause
            rows.append(await flooded(label, pool, runtime, issued.username, n, ack, interval, idle))
        submission.credentials, handler.auth_failure_delay = keyed, shipped_pause
        async with runtime.db.transaction() as session:
            await session.execute(
                update(GatewayCredential)
                .where(GatewayCredential.username == issued.username)
                .values(password_hash=hash_password(issued.password))
            )
        rows.append(await flooded("legacy scrypt row", pool, runtime, issued.username, 1, ack, interval, idle))
    rows.insert(0, ("idle (baseline)", summary(idle), ""))
    await slack.close()
    print(
        f"\nSlack ack (signed /identity help over HTTP, one every {interval * 1000:.0f} ms) during bursts of 200 wrong"
    )
    print(f"AUTHs from {CONNECTIONS} connections")
    print(
        f"{'while':<20} {'AUTHs':>6} {'AUTH/s':>7} {'probes':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  p99 vs idle"
    )
    base = rows[0][1]["p99"]
    for label, s, extra in rows:
        change = "" if label.startswith("idle") else f"{100 * (s['p99'] / base - 1):+.0f}%"
        print(f"{label:<20} {extra:>14} {s['n']:>7} {s['p50']:>7.1f} {s['p99']:>7.1f} {s['max']:>7.1f}  {change}")


async def flooded(
    label: str,
    pool: ProcessPoolExecutor,
    runtime: Runtime,
    username: str,
    bursts: int,
    ack: Callable[[], Awaitable[float]],
    interval: float,
    idle: list[float],
) -> tuple[str, dict[str, float], str]:
    """`bursts` bursts of 200 wrong AUTHs, one after the other, probing while each lasts (the probes pooled), and
    100 idle probes before each (added to `idle`)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    attempts = 0
    seconds = 0.0
    for _ in range(bursts):
        idle += await probe_while(ack, lambda: False, interval, least=100)
        work = loop.run_in_executor(pool, flood, runtime.gateway.port, username, 1)
        latencies += await probe_while(ack, lambda: not work.done(), interval)  # noqa: B023 - awaited right here
        done, took = await work
        attempts, seconds = attempts + done, seconds + took
        await asyncio.sleep(0.5)  # let the gateway settle between bursts
    return label, summary(latencies), f"{attempts:>6} {attempts / seconds:>7.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--bursts", type=int, default=9, help="bursts of 200 wrong AUTHs without the pause (a third with)"
    )
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between two ack probes")
    args = parser.parse_args(argv)
    asyncio.run(run(args.bursts, args.interval))


if __name__ == "__main__":
    main()
