"""`identity-bot demo`: the whole flow on embedded defaults, against the local Slack emulator, printing what
the modal and the channel show. Nothing here is mocked but Slack itself."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib

from bot.app import Runtime
from bot.config import load_settings
from bot.sandbox import AckResponse, FakeSlack, SlackClient
from bot.sandbox.mailhost import MailHost, make_certificates

TOKEN = "xoxb-demo"  # the local emulator accepts it; not a real token
SECRET = "demo-signing-secret"
LEAD, CHANNEL = "U_LEAD", "C_SALES_OPS"
MANAGER, APPROVALS = "U_MANAGER", "C_APPROVALS"
FORWARDING = "lea@northwind.example.com"
COMPANY_ADDRESS = "jane@northwind.example.com"
APP_PASSWORD = "qwertyuiopasdfgh"


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


def ack_view(ack: AckResponse) -> dict[str, Any]:
    """The view a modal's ack replaced it with."""
    assert isinstance(ack.body, dict), ack
    return dict(ack.body["view"])


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
        render_blocks(message.get("blocks") or [{"type": "section", "text": {"text": message.get("text", "")}}], "│ ")
    )
    print("└─")


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.fake = FakeSlack(token=TOKEN)
        self.runtime: Runtime | None = None
        self.slack: SlackClient | None = None
        self.mail = MailHost(identity_address=COMPANY_ADDRESS, users={COMPANY_ADDRESS: APP_PASSWORD})

    # ---- plumbing --------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.fake.start()
        self.fake.add_user(LEAD, name="lea.lead", real_name="Lea Lead")
        self.fake.add_user(MANAGER, name="max.manager", real_name="Max Manager")
        ca_file, tls = make_certificates(self.workdir / "certs")
        os.environ["SSL_CERT_FILE"] = str(ca_file)  # our client trusts the demo mail server's CA, like a real one
        await self.mail.start(tls)
        env = {
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": self.fake.url,
            "PORT": "0",
            "DATA_DIR": str(self.workdir / "data"),
            "INBOUND_SMTP": "127.0.0.1:0",
            "SUBMISSION_SMTP": "127.0.0.1:0",
            "RELAY_SMTP_URL": f"smtp://127.0.0.1:{self.mail.mx_port}?security=none",
            "SMTP_ALLOW_PRIVATE_HOSTS": "true",
            "MANAGERS": MANAGER,
            "APPROVALS_CHANNEL": APPROVALS,
            "TRACKING_TIMEOUT": "30",
            "LOG_LEVEL": "WARNING",
        }
        self.runtime = Runtime(load_settings(env))
        await self.runtime.start()
        assert self.runtime.http_url
        self.mail.inbound = (self.runtime.inbound.host, self.runtime.inbound.port)
        self.slack = SlackClient(self.runtime.http_url, SECRET, self.fake)
        print(f"Identity Bot is running at {self.runtime.http_url} (SQLite in {self.workdir / 'data'})")
        print(
            f"  inbound SMTP {self.runtime.inbound.host}:{self.runtime.inbound.port}, "
            f"submission gateway {self.runtime.gateway.host}:{self.runtime.gateway.port}"
        )
        print(
            f"  Slack emulator at {self.fake.url}; Northwind's mail server on 127.0.0.1:"
            f"{self.mail.submission_port} (STARTTLS + AUTH) and :{self.mail.mx_port} (MX)"
        )

    async def stop(self) -> None:
        if self.slack:
            await self.slack.close()
        if self.runtime:
            await self.runtime.stop()
        await self.mail.stop()
        await self.fake.stop()

    def say(self, line: str) -> None:
        print(f"\n>>> {line}")

    def scene(self, title: str) -> None:
        print(f"\n{'=' * 100}\n{title}\n{'=' * 100}")

    def show_posts_since(self, mark: int, *, threads: bool = True) -> None:
        for call in self.fake.calls[mark:]:
            if call.method == "chat.postMessage" and call.ok:
                message = self.fake.messages.get((call.response["channel"], call.response["ts"]))
                if message and (threads or not message.get("thread_ts")):
                    show_message(message)

    async def loaded(self, mark: int, callback_id: str) -> dict[str, Any]:
        """The modal once filled in (it opens with "Loading…" while the bot looks things up)."""
        call = await self.fake.wait_for(
            "views.update", lambda c: c.ok and c.response["view"].get("callback_id") == callback_id, after=mark
        )
        return call.response["view"]

    async def panel(self, address: str) -> tuple[str, str]:
        calls = [
            c
            for c in self.fake.calls
            if c.method == "chat.postMessage"
            and c.ok
            and address in str(c.args.get("blocks"))
            and "verify-sending" in str(c.args.get("blocks"))
        ]
        return calls[-1].response["channel"], calls[-1].response["ts"]

    async def click_panel(self, address: str, action: str) -> int:
        assert self.slack
        channel, ts = await self.panel(address)
        mark = self.fake.mark()
        await self.slack.click_message(channel, ts, action, user=LEAD)
        return mark

    async def panel_update(self, address: str, text: str, mark: int) -> None:
        channel, ts = await self.panel(address)
        await self.fake.wait_for(
            "chat.update",
            lambda c: c.args.get("ts") == ts and text in str(c.args.get("blocks")),
            after=mark,
            timeout=20,
        )
        reply = await self.fake.wait_for(
            "chat.postMessage",
            lambda c: c.args.get("thread_ts") == ts and text in c.args.get("text", ""),
            after=mark,
            timeout=20,
        )
        show_message(self.fake.messages[(reply.response["channel"], reply.response["ts"])])

    def show_panel(self, address: str, channel: str, ts: str) -> None:
        show_message(self.fake.messages[(channel, ts)])

    # ---- scenes ----------------------------------------------------------------------------------------
    async def create_platform_identity(self) -> str:
        assert self.slack
        self.scene("1. A platform-domain identity")
        self.say(f"@lea.lead types in #{CHANNEL}: /identity new")
        mark = self.fake.mark()
        await self.slack.command("new", user=LEAD, channel=CHANNEL)
        view = (await self.fake.wait_for("views.open", after=mark)).response["view"]
        show_view("opened", view)
        self.say("She types her display name, company and forwarding address, and clicks [Auto create]")
        self.slack.type(view["id"], "display_name", "Lea Lead")
        self.slack.type(view["id"], "company_name", "Northwind Traders")
        self.slack.type(view["id"], "forwarding_address", FORWARDING)
        mark = self.fake.mark()
        await self.slack.click_view(view["id"], "identity-auto-create")
        view = (await self.fake.wait_for("views.update", after=mark)).response["view"]
        address = next(
            b["element"]["initial_value"] for b in view["blocks"] if b.get("block_id", "").startswith("address#")
        )
        show_view("after Auto create", view)
        self.say("She clicks [Save changes]")
        mark = self.fake.mark()
        ack = await self.slack.submit(view["id"])
        show_view("after saving", ack_view(ack))
        await self.fake.wait_for("chat.postMessage", after=mark)
        self.show_posts_since(mark)
        return address

    async def verify(self, address: str) -> None:
        assert self.slack
        self.say("She clicks [Send Test Email]")
        mark = await self.click_panel(address, "verify-sending")
        await self.panel_update(address, "Sending Verified", mark)

        self.say("She clicks [Send Test Response Email]")
        inbox = len(self.mail.received)
        mark = await self.click_panel(address, "verify-receiving-send")
        otp = await self.mail.wait_for("verification code", after=inbox)
        code = re.search(r"\b(\d{6})\b", otp.message.get_body(("plain",)).get_content()).group(1)  # type: ignore[union-attr]
        print(f"\n    ✉  In {FORWARDING}'s inbox: “{otp.message['Subject']}”")
        self.say(f"She clicks [Enter OTP] and types {code}")
        mark = await self.click_panel(address, "verify-receiving-enter")
        opened = await self.fake.wait_for(
            "views.open", lambda c: c.ok and c.response["view"].get("callback_id") == "otp-form", after=mark
        )
        view = opened.response["view"]
        self.slack.type(view["id"], "otp", code)
        ack = await self.slack.submit(view["id"], user=LEAD)
        show_view("after Verify", ack_view(ack))
        await self.panel_update(address, "Receiving Verified", mark)

        self.say("She clicks [Send Response Email]")
        mark = await self.click_panel(address, "verify-tracking")
        await self.panel_update(address, "Tracking Verified", mark)
        ready = await self.fake.wait_for(
            "chat.postMessage", lambda c: "ready to use" in c.args.get("text", ""), after=mark
        )
        show_message(self.fake.messages[(ready.response["channel"], ready.response["ts"])])
        self.say("The panel in the channel now reads:")
        self.show_panel(address, *(await self.panel(address)))

    async def company_identity(self) -> None:
        assert self.slack
        self.scene("2. A company-domain identity, sent through Northwind's own mail server")
        mark = self.fake.mark()
        await self.slack.command("new", user=LEAD, channel=CHANNEL)
        view = (await self.fake.wait_for("views.open", after=mark)).response["view"]
        self.say("She chooses (•) Company domain: the form grows the SMTP section and a CC tracking address")
        mark = self.fake.mark()
        await self.slack.choose(view["id"], "kind", "company", user=LEAD)
        await self.fake.wait_for("views.update", after=mark)
        for name, value in (
            ("display_name", "Jane Doe"),
            ("company_name", "Northwind Traders"),
            ("address", COMPANY_ADDRESS),
            ("forwarding_address", FORWARDING),
            ("smtp_host", "127.0.0.1"),
            ("smtp_port", str(self.mail.submission_port)),
            ("smtp_password", "wrong-password"),
        ):
            self.slack.type(view["id"], name, value)
        self.say("She types the SMTP details with a mistyped password and clicks [Test email setup]")
        await self.test_setup(view["id"])
        self.say("She pastes the 16-character app password and tests again")
        self.slack.type(view["id"], "smtp_password", APP_PASSWORD)
        await self.test_setup(view["id"], show=True)
        self.say("She clicks [Save changes]")
        mark = self.fake.mark()
        ack = await self.slack.submit(view["id"], user=LEAD)
        show_view("after saving", ack_view(ack))
        await self.fake.wait_for("chat.postMessage", after=mark)
        tracking = re.search(r"cc-[0-9a-f]+@[\w.-]+", str(ack.body["view"])).group(0)  # type: ignore[union-attr,index]
        self.say(f"Jane adds {tracking} as a forwarder in her mailbox, then runs the three steps")
        self.mail.forward_to = tracking
        await self.verify(COMPANY_ADDRESS)

    async def test_setup(self, view_id: str, *, show: bool = False) -> None:
        assert self.slack
        mark = self.fake.mark()
        await self.slack.click_view(view_id, "identity-test-setup", user=LEAD)
        done = await self.fake.wait_for("views.update", after=mark + 1, timeout=20)
        result = next(b for b in done.response["view"]["blocks"] if b.get("block_id") == "test_result")
        print(f"\n    modal says: {plain(result['text']['text'])}")
        if show:
            show_view("after a passing test", done.response["view"])

    async def limits(self, address: str) -> None:
        assert self.slack
        self.scene("3. A limit increase, approved by a manager")
        self.say(f"@lea.lead: /identity limits {address} → 60 per hour, 250 per day, “Q4 campaign”")
        mark = self.fake.mark()
        await self.slack.command(f"limits {address}", user=LEAD, channel=CHANNEL)
        view = await self.loaded(mark, "limits-form")
        self.slack.type(view["id"], "hourly_limit", "60")
        self.slack.type(view["id"], "daily_limit", "250")
        self.slack.type(view["id"], "reason", "Q4 campaign")
        ack = await self.slack.submit(view["id"], user=LEAD)
        show_view("after Save", ack_view(ack))
        request = await self.fake.wait_for(
            "chat.postMessage", lambda c: "Limit increase request" in c.args.get("text", ""), after=mark
        )
        channel, ts = request.response["channel"], request.response["ts"]
        show_message(self.fake.messages[(channel, ts)])
        self.say("@max.manager clicks [Approve] and confirms")
        mark = self.fake.mark()
        await self.slack.click_message(channel, ts, "limit-request-approve", user=MANAGER)
        await self.fake.wait_for("chat.update", lambda c: c.args.get("ts") == ts, after=mark)
        show_message(self.fake.messages[(channel, ts)])
        await self.fake.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL, after=mark)
        self.show_posts_since(mark)

    async def gateway(self, address: str) -> None:
        assert self.slack and self.runtime
        self.scene("4. Campaign mail through the limit-enforcing submission gateway")
        issued = await self.runtime.services.credentials.issue(address, actor="demo")
        print(f"\n    identity-bot credentials issue {address}  →  username: {issued.username}, password: (shown once)")
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = address, "prospect@example.com", "Hello from Northwind"
        message.set_content("Hi! Do you have ten minutes next week?")
        response = await aiosmtplib.send(
            message,
            hostname=self.runtime.gateway.host,
            port=self.runtime.gateway.port,
            username=issued.username,
            password=issued.password,
            start_tls=False,
            timeout=10,
        )
        print(f"    gateway answered: {response[1]}")
        self.say(f"@lea.lead: /identity show {address}")
        n = len(self.fake.responses)
        await self.slack.command(f"show {address}", user=LEAD, channel=CHANNEL)
        shown = await self.fake.wait_for_response(after=n)
        print("\n┌─ only visible to you")
        print(render_blocks(shown.get("blocks", []), "│ "))
        print("└─")

    async def run(self) -> None:
        started = time.monotonic()
        await self.start()
        try:
            address = await self.create_platform_identity()
            self.scene("   … and its three verification steps")
            await self.verify(address)
            await self.company_identity()
            await self.limits(address)
            await self.gateway(address)
        finally:
            await self.stop()
        problems = self.fake.warnings
        print(
            f"\nDemo finished in {time.monotonic() - started:.1f} s." + (f" Warnings: {problems}" if problems else "")
        )


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="identity-bot-demo-") as tmp:
        asyncio.run(Demo(Path(tmp)).run())
    return 0
