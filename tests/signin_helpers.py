"""Helpers for "Sign in with Microsoft / Google" end to end: a local authorization server and an XOAUTH2-only SMTP
server (bot/sandbox), the customer's MX with its forwarder (tests/companymail.py), the bot with the sign-in
configured, and a browser that follows the sign-in link.

The bot's public name (PUBLIC_URL) is not the address it listens on, as behind a reverse proxy: the browser maps
one to the other, so nothing depends on choosing a port before the bot starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.sandbox import FakeSlack
from bot.sandbox.oauth_server import FakeAuthorizationServer
from bot.sandbox.xoauth2_smtp import XOAuth2OnlyHandler, start_xoauth2_server
from handlers.identity.ids import IdentityForm as F
from models import IdentityKind
from tests.companymail import COMPANY_ADDRESS, FORWARDING_ADDRESS, CompanyMail
from tests.conftest import Bot, start_bot
from tests.mailservers import TestCA

PUBLIC_URL = "https://identity-bot.example.test"


@dataclass
class Provider:
    """The provider side of a sign-in: its authorization server and its SMTP submission server."""

    auth: FakeAuthorizationServer
    smtp: XOAuth2OnlyHandler
    smtp_port: int
    _server: Any

    @property
    def style(self) -> str:
        return self.auth.style

    @property
    def label(self) -> str:
        return "Microsoft" if self.style == "microsoft" else "Google"

    def env(self) -> dict[str, str]:
        return {**self.auth.env(), f"{self.style.upper()}_SMTP": f"127.0.0.1:{self.smtp_port}"}

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        await self.auth.close()


async def start_provider(style: str, ca: TestCA) -> Provider:
    auth = FakeAuthorizationServer(style=style, rotate_refresh_tokens=style == "microsoft")  # type: ignore[arg-type]
    await auth.start()
    auth.redirect_uris.add(PUBLIC_URL + "/oauth/callback")
    auth.sign_in_as(COMPANY_ADDRESS)
    handler = XOAuth2OnlyHandler(auth)
    server, port = await start_xoauth2_server(handler, ca.server_context())
    return Provider(auth, handler, port, server)


async def start_signin_bot(
    tmp_path: Path, url: str, fake: FakeSlack, company: CompanyMail, providers: list[Provider], **env: str
) -> Bot:
    settings: dict[str, str] = {"PUBLIC_URL": PUBLIC_URL}
    for provider in providers:
        settings.update(provider.env())
    settings.update(env)
    bot = await start_bot(tmp_path, url, fake, RELAY_SMTP_URL=company.relay_url, SMTP_TIMEOUT="5", **settings)
    company.inbound = (bot.runtime.inbound.host, bot.runtime.inbound.port)
    return bot


class Browser:
    """Follows links like a browser (redirects one by one), reaching PUBLIC_URL where the bot really listens."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.visited: list[str] = []

    def _real(self, url: str) -> str:
        if url.startswith(PUBLIC_URL):
            assert self.bot.runtime.http_url
            return self.bot.runtime.http_url + url[len(PUBLIC_URL) :]
        return url

    async def get(self, url: str, *, hops: int = 5) -> tuple[int, str]:
        """The final page (status, text) after following redirects."""
        async with aiohttp.ClientSession() as http:
            for _ in range(hops):
                self.visited.append(url)
                async with http.get(self._real(url), allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307):
                        url = resp.headers["Location"]
                        continue
                    return resp.status, await resp.text()
        raise AssertionError(f"too many redirects: {self.visited}")

    async def first_hop(self, url: str) -> str:
        """Where the link redirects to (without following)."""
        async with aiohttp.ClientSession() as http, http.get(self._real(url), allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            return resp.headers["Location"]


def block(view: dict[str, Any], base: str) -> dict[str, Any]:
    for b in view["blocks"]:
        if b.get("block_id", "").split("#")[0] == base:
            return b
    raise AssertionError(f"no block {base} in {[b.get('block_id') for b in view['blocks']]}")


def has_block(view: dict[str, Any], base: str) -> bool:
    return any(b.get("block_id", "").split("#")[0] == base for b in view["blocks"])


def sign_in_link(view: dict[str, Any]) -> str:
    button = next(e for e in block(view, F.sign_in_block)["elements"] if e["action_id"] == F.sign_in)
    return str(button["url"])


async def open_signin_form(bot: Bot, provider: Provider, *, user: str = "U_LEAD", **fields: str) -> dict[str, Any]:
    """A new company-domain form with the provider chosen and the other fields typed; the form as shown."""
    mark = bot.fake.mark()
    ack = await bot.slack.command("new", user=user)
    assert ack.status == 200
    view_id = (await bot.fake.wait_for("views.open", after=mark)).response["view"]["id"]
    mark = bot.fake.mark()
    await bot.slack.choose(view_id, F.kind, IdentityKind.COMPANY, user=user)
    await bot.fake.wait_for("views.update", after=mark)
    mark = bot.fake.mark()
    await bot.slack.choose(view_id, F.provider, provider.style, user=user)
    view = (await bot.fake.wait_for("views.update", after=mark)).response["view"]
    values = {
        F.display_name: "Jane Doe",
        F.company_name: "Acme Inc.",
        F.address: COMPANY_ADDRESS,
        F.forwarding_address: FORWARDING_ADDRESS,
    }
    values.update(fields)
    for name, value in values.items():
        bot.slack.type(view_id, name, value)
    return view


async def sign_in(bot: Bot, view: dict[str, Any], *, user: str = "U_LEAD") -> tuple[int, str, dict[str, Any]]:
    """Click Sign in, follow the link as the browser; (page status, page text, the modal as updated)."""
    mark = bot.fake.mark()
    ack = await bot.slack.click_view(view["id"], F.sign_in, user=user)
    assert ack.status == 200
    status, page = await Browser(bot).get(sign_in_link(bot.fake.views[view["id"]]))
    call = await bot.fake.wait_for("views.update", lambda c: c.args.get("view_id") == view["id"], after=mark)
    return status, page, call.response.get("view") or {}


async def run_test_setup(bot: Bot, view_id: str) -> str:
    """Click Test email setup; what the modal finally says."""
    mark = bot.fake.mark()
    ack = await bot.slack.click_view(view_id, F.test_setup)
    assert ack.status == 200
    await bot.fake.wait_for("views.update", after=mark)
    done = await bot.fake.wait_for("views.update", after=mark + 1, timeout=20)
    assert done.ok, done.response
    return str(block(done.response["view"], F.test_result)["text"]["text"])
