"""The inbound server under Postfix's smtp-source, against a null aiosmtpd in the same run, with every message a lead
that is processed and forwarded before the run ends, and Slack ack latency measured during the flood.

    python benchmarks/inbound.py [--messages N] [--sessions S] [--database sqlite|postgresql|both] [--repeat R]

For each database and repetition:
1. a null aiosmtpd (answers 250, stores nothing) takes N messages from smtp-source: the baseline rate;
2. the bot runs as it does in production (`python -m bot run`, a fresh database, one ready platform identity, the
   platform relay pointed at another null server that counts the forwards, Slack pointed at the local emulator);
   `/identity help` is sent as a signed slash command every 25 ms for 10 s (idle), then throughout the flood of N
   messages from smtp-source (the same command line as for the null server);
3. the run ends when every accepted message is processed and its forward has reached the relay.
Reported: both accepted rates and their ratio, how long processing took to finish after the flood, and the Slack
ack latency (p50 / p99 / max) idle and during the flood.

smtp-source comes from Debian's postfix package, unpacked (benchmarks/fetch-smtp-source.sh: apt-get download +
dpkg-deb -x, nothing installed or started). It sends its own generated message: a unique Message-Id per message, a
reply's subject, and a 2 KB body, which the classifier takes for a lead (no rule matches it).
PostgreSQL is expected at TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test); a scratch
database is created and dropped for each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from scratch_db import drop_database, prepare_database  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bot.sandbox import FakeSlack, SlackClient  # noqa: E402
from models import Database, Identity, IdentityKind, IdentityStatus, InboundMessage  # noqa: E402

HERE = Path(__file__).resolve().parent
TOOLS = HERE / ".tools" / "postfix"
DOMAIN = "bench.example.com"
IDENTITY = f"sales@{DOMAIN}"
SIGNING_SECRET = "bench-signing-secret"
BOT_TOKEN = "xoxb-bench"
PROBE_EVERY = 0.025
IDLE_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smtp_source() -> str:
    """The smtp-source wrapper, fetched on first use (idempotent)."""
    out = subprocess.run(
        [str(HERE / "fetch-smtp-source.sh"), str(TOOLS)], check=True, stdout=subprocess.PIPE, text=True
    )
    return out.stdout.strip().splitlines()[-1]


@dataclass
class Flood:
    messages: int
    elapsed: float
    rejected: int
    fatal: str | None

    @property
    def accepted(self) -> int:
        return self.messages - self.rejected

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed


async def flood(binary: str, port: int, messages: int, sessions: int) -> Flood:
    cmd = [
        binary, "-A", "-s", str(sessions), "-m", str(messages), "-l", "2048", "-M", "loadgen.bench",
        "-f", "jane.prospect@example.org", "-t", IDENTITY, "-S", "Re: Pricing for 50 seats", f"127.0.0.1:{port}",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 600)  # smtp-source never times out by itself
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    elapsed = time.perf_counter() - started
    lines = err.decode(errors="replace").splitlines()
    rejected = sum(": warning: " in line for line in lines)
    fatal = next((line for line in lines if ": fatal: " in line), None)
    return Flood(messages, elapsed, rejected, fatal)


class NullServer:
    """benchmarks/null_smtp.py in its own process."""

    async def __aenter__(self) -> NullServer:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "null_smtp.py"), stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
        )
        assert self.proc.stdout is not None
        self.port = int(json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 20))["smtp_port"])
        self.messages = 0
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 20)
        self.messages = int(json.loads(out.decode().strip().splitlines()[-1])["messages"])


@dataclass
class Latencies:
    values: list[float] = field(default_factory=list)
    errors: int = 0

    def summary(self) -> dict[str, float]:
        v = sorted(self.values)
        if not v:
            return {"n": 0}
        return {
            "n": len(v),
            "p50": 1000 * statistics.median(v),
            "p99": 1000 * v[min(len(v) - 1, int(0.99 * len(v)))],
            "max": 1000 * v[-1],
        }


async def probe(client: SlackClient, until: asyncio.Future[Any] | float) -> Latencies:
    """A signed `/identity help` every PROBE_EVERY seconds (open loop: a slow ack does not delay the next one)."""
    found = Latencies()

    async def one() -> None:
        started = time.perf_counter()
        try:
            ack = await client.command("help")
            if ack.status != 200:
                found.errors += 1
                return
        except Exception:  # noqa: BLE001 - counted: a probe that failed
            found.errors += 1
            return
        found.values.append(time.perf_counter() - started)

    tasks = []
    deadline = time.perf_counter() + until if isinstance(until, float) else None
    while (deadline is not None and time.perf_counter() < deadline) or (
        deadline is None and not until.done()  # type: ignore[union-attr]
    ):
        tasks.append(asyncio.ensure_future(one()))
        await asyncio.sleep(PROBE_EVERY)
    await asyncio.gather(*tasks)
    return found


async def add_identity(db: Database) -> None:
    async with db.transaction() as session:
        session.add(
            Identity(
                team_id="T0BENCH",
                kind=IdentityKind.PLATFORM,
                display_name="Sales",
                company_name="Bench Inc.",
                address=IDENTITY,
                forwarding_address="leads@customer.example.org",
                notices_channel="C_BENCH",
                created_by="U_BENCH",
                status=IdentityStatus.READY,
            )
        )


async def forwarded(db: Database) -> int:
    async with db.session() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(InboundMessage).where(InboundMessage.forwarded_at.is_not(None))
            )
            or 0
        )


async def run_bot(args: argparse.Namespace, kind: str, binary: str) -> dict[str, Any]:
    # Long on purpose: one run, start to finish, reads best in one place (set-up, idle probe, flood, drain).
    fake = FakeSlack(token=BOT_TOKEN, team_id="T0BENCH")
    await fake.start()
    workdir = Path(tempfile.mkdtemp(prefix="idbot-bench-"))
    url, scratch = await prepare_database(kind, workdir)
    db = Database(url)
    proc = None
    try:
        await db.upgrade()
        await add_identity(db)
        http_port, inbound_port = free_port(), free_port()
        async with NullServer() as relay:
            env = {
                **os.environ,
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_APP_TOKEN": "",
                "SLACK_API_URL": fake.url,
                "HOST": "127.0.0.1",
                "PORT": str(http_port),
                "DATA_DIR": str(workdir / "data"),
                "DATABASE_URL": url,
                "PLATFORM_DOMAIN": DOMAIN,
                "TRACKING_DOMAIN": DOMAIN,
                "INBOUND_SMTP": f"127.0.0.1:{inbound_port}",
                "SUBMISSION_SMTP": f"127.0.0.1:{free_port()}",
                "RELAY_SMTP_URL": f"smtp://127.0.0.1:{relay.port}?security=none",
                "LOG_LEVEL": "WARNING",
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "run"], env=env, cwd=workdir, stdin=subprocess.DEVNULL
            )
            app_url = f"http://127.0.0.1:{http_port}"
            await wait_ready(app_url)
            client = SlackClient(app_url, SIGNING_SECRET, fake, team_id="T0BENCH")
            try:
                idle = await probe(client, IDLE_SECONDS)
                flooding = asyncio.ensure_future(flood(binary, inbound_port, args.messages, args.sessions))
                during = await probe(client, flooding)
                result = flooding.result()
                flood_end = time.perf_counter()
                print(f"{kind}: flood done, {result.accepted} accepted at {result.rate:,.0f} msg/s", file=sys.stderr)
                deadline = flood_end + args.drain_timeout
                while (done := await forwarded(db)) < result.accepted and time.perf_counter() < deadline:
                    await asyncio.sleep(0.2)
                drained_after = time.perf_counter() - flood_end
            finally:
                await client.close()
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 60)
        return {
            "database": kind,
            "accepted": result.accepted,
            "rejected": result.rejected,
            "fatal": result.fatal,
            "rate": result.rate,
            "forwarded": done,
            "relay_received": relay.messages,
            "drained_after_s": drained_after,
            "ack_idle_ms": idle.summary(),
            "ack_flood_ms": during.summary(),
            "ack_errors": idle.errors + during.errors,
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        await db.dispose()
        await drop_database(scratch)
        await fake.stop()


async def wait_ready(app_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(f"{app_url}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the bot did not start")


async def run_null(args: argparse.Namespace, binary: str) -> float:
    async with NullServer() as null:
        await flood(binary, null.port, 100, args.sessions)  # warm-up
        result = await flood(binary, null.port, args.messages, args.sessions)
    return result.rate


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--drain-timeout", type=float, default=900.0, help="seconds to wait for every forward")
    args = parser.parse_args()
    binary = smtp_source()
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    rows = []
    for _ in range(args.repeat):
        for kind in kinds:
            null_rate = await run_null(args, binary)
            bot = await run_bot(args, kind, binary)
            bot["null_rate"] = null_rate
            bot["ratio"] = bot["rate"] / null_rate
            rows.append(bot)
            print(json.dumps(bot), flush=True)
    print()
    print("| database | null aiosmtpd msg/s | inbound accepted msg/s | ratio | all forwarded after the flood |"
          " Slack ack idle p50 / p99 / max | during the flood p50 / p99 / max |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        i, f = r["ack_idle_ms"], r["ack_flood_ms"]
        print(
            f"| {r['database']} | {r['null_rate']:,.0f} | {r['rate']:,.0f} | {r['ratio']:.2f} | "
            f"{r['drained_after_s']:.1f} s ({r['forwarded']}/{r['accepted']}) | "
            f"{i['p50']:.0f} / {i['p99']:.0f} / {i['max']:.0f} ms | "
            f"{f['p50']:.0f} / {f['p99']:.0f} / {f['max']:.0f} ms |"
        )
    ok = all(r["forwarded"] == r["accepted"] == args.messages and r["relay_received"] >= r["accepted"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
