"""`identity-bot demo`: the whole flow on embedded defaults, against the local Slack emulator, printing what
the modal and the channel show. Nothing here is mocked but Slack itself."""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.app import Runtime
from bot.config import load_settings
from bot.emulator import FakeSlack, SlackClient

TOKEN = "xoxb-demo-token"
SECRET = "demo-signing-secret"
LEAD, CHANNEL = "U_LEAD", "C_SALES_OPS"


def _text(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return str(obj or "")


def plain(mrkdwn: str) -> str:
    """Slack mrkdwn as a reader sees it (date tokens show their UTC fallback)."""
    s = re.sub(r"<!date\^\d+\^[^|]*\|([^>]*)>", r"\1", mrkdwn)
    s = re.sub(r"<@(\w+)>", r"@\1", s)
    s = re.sub(r"<#(\w+)>", r"#\1", s)
    return s.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_blocks(blocks: list[dict[str, Any]], indent: str = "  ") -> str:
    out: list[str] = []
    for b in blocks:
        kind = b.get("type")
        if kind == "header":
            out.append(f"== {_text(b['text'])} ==")
        elif kind == "section":
            if b.get("text"):
                out.append(plain(_text(b["text"])))
            for f in b.get("fields", []):
                out.append(plain(_text(f)).replace("\n", ": ", 1))
            if b.get("accessory", {}).get("type") == "button":
                out.append(f"[{_text(b['accessory']['text'])}]")
        elif kind == "context":
            out.append(" ".join(plain(_text(e)) for e in b.get("elements", [])))
        elif kind == "divider":
            out.append("-" * 40)
        elif kind == "actions":
            out.append("  ".join(f"[{_text(e.get('text'))}]" for e in b.get("elements", [])))
        elif kind == "input":
            el = b.get("element", {})
            value = (
                el.get("initial_value")
                or (el.get("initial_option") or {}).get("text", {}).get("text")
                or el.get("initial_conversation")
                or ""
            )
            out.append(f"{_text(b['label'])}: [{value}]")
    return "\n".join(indent + line for chunk in out for line in chunk.splitlines())


def show_view(title: str, view: dict[str, Any]) -> None:
    print(f"\n┌─ modal: {_text(view.get('title'))} ({title})")
    print(render_blocks(view.get("blocks", []), "│ "))
    if view.get("submit"):
        print(f"│ [{_text(view['close'])}]  [{_text(view['submit'])}]")
    print("└─")


def show_message(message: dict[str, Any]) -> None:
    where = f"#{message['channel']}" + (" (thread)" if message.get("thread_ts") else "")
    print(f"\n┌─ {where}, from Identity Bot")
    print(
        render_blocks(
            message.get("blocks") or [{"type": "section", "text": {"text": message.get("text", "")}}], "│ "
        )
    )
    print("└─")


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.fake = FakeSlack(token=TOKEN)
        self.runtime: Runtime | None = None
        self.slack: SlackClient | None = None
        self.shown: set[tuple[str, str]] = set()

    async def start(self) -> None:
        await self.fake.start()
        self.fake.add_user(LEAD, name="lea.lead", real_name="Lea Lead")
        env = {
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": self.fake.url,
            "PORT": "0",
            "DATA_DIR": str(self.workdir / "data"),
            "INBOUND_SMTP": "127.0.0.1:0",
            "SUBMISSION_SMTP": "127.0.0.1:0",
            "LOG_LEVEL": "WARNING",
        }
        self.runtime = Runtime(load_settings(env))
        await self.runtime.start()
        assert self.runtime.http_url
        self.slack = SlackClient(self.runtime.http_url, SECRET, self.fake)
        print(
            f"Identity Bot is running at {self.runtime.http_url} (database: SQLite in {self.workdir / 'data'})"
        )
        print(f"Slack emulator at {self.fake.url}\n")

    async def stop(self) -> None:
        if self.slack:
            await self.slack.close()
        if self.runtime:
            await self.runtime.stop()
        await self.fake.stop()

    def say(self, line: str) -> None:
        print(f"\n>>> {line}")

    def show_new_messages(self) -> None:
        for key, message in list(self.fake.messages.items()):
            if key not in self.shown:
                self.shown.add(key)
                show_message(message)

    async def create_platform_identity(self) -> None:
        assert self.slack and self.runtime
        self.say(f"@lea.lead types in #{CHANNEL}: /identity new")
        mark = self.fake.mark()
        await self.slack.command("new", user=LEAD, channel=CHANNEL)
        view = (await self.fake.wait_for("views.open", after=mark)).response["view"]
        show_view("opened", view)
        self.say("She types her display name and company, and clicks [Auto create]")
        self.slack.type(view["id"], "display_name", "Lea Lead")
        self.slack.type(view["id"], "company_name", "Northwind Traders")
        self.slack.type(view["id"], "forwarding_address", "lea@northwind.example.com")
        mark = self.fake.mark()
        await self.slack.click_view(view["id"], "identity-auto-create")
        view = (await self.fake.wait_for("views.update", after=mark)).response["view"]
        show_view("after Auto create", view)
        self.say("She clicks [Save changes]")
        mark = self.fake.mark()
        ack = await self.slack.submit(view["id"])
        show_view("after saving", ack.body["view"])  # type: ignore[index]
        await self.fake.wait_for("chat.postMessage", after=mark)
        self.show_new_messages()

    async def run(self) -> None:
        started = time.monotonic()
        await self.start()
        try:
            await self.create_platform_identity()
        finally:
            await self.stop()
        problems = self.fake.warnings
        print(
            f"\nDemo finished in {time.monotonic() - started:.1f} s."
            + (f" Warnings: {problems}" if problems else "")
        )


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="identity-bot-demo-") as tmp:
        asyncio.run(Demo(Path(tmp)).run())
    return 0
