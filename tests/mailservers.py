"""Reusable mail test helpers: a test CA, real aiosmtpd servers on 127.0.0.1 free ports, and a mailbox to wait on.

Import with `from tests.mailservers import ...` (run pytest as `python -m pytest` from the project root). Servers
run in the test's own event loop (`loop.create_server(lambda: SMTP(...))`), not in aiosmtpd's Controller thread, so
a Mailbox can be awaited without any cross-thread signalling or polling. Point SSL_CERT_FILE at `ca.cert_file`
to make the client trust the test CA.

Fixtures (`mail_ca`, `untrusted_ca`, `trust_mail_ca`, `smtp_servers`) are defined as `*_fixture` functions with an
explicit name, so a test module can import them without its parameters shadowing the import (ruff F811):

    from tests.mailservers import Mailbox, smtp_servers_fixture, trust_mail_ca_fixture  # noqa: F401

    async def test_x(smtp_servers, trust_mail_ca):  # trust_mail_ca sets SSL_CERT_FILE for this test
        box = Mailbox()
        server = await smtp_servers.smtp(mailbox=box, security="starttls", tls_context=trust_mail_ca.server_context(),
                                         auth={"jane@acme.example.com": "app-password"})
        ...                                       # connect to 127.0.0.1:server.port
        msg = await box.wait_for(lambda m: m["Subject"] == "Hello")

(or `pytest_plugins = ["tests.mailservers"]` in tests/conftest.py makes them available everywhere; the plain
names `mail_ca`, `untrusted_ca`, `trust_mail_ca`, `smtp_servers` are importable too). Without the fixture,
`server = await start_smtp_server(...)` and `await server.close()` in a finally block.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

LOCALHOST = "127.0.0.1"
DEFAULT_HOSTNAMES = ("localhost", LOCALHOST)
DEFAULT_AUTH_FAILURE = "535 5.7.8 Authentication credentials invalid"
DEFAULT_SENDER_REFUSAL = "550 5.7.1 Sender address not allowed for this account"
DEFAULT_RECIPIENT_REFUSAL = "550 5.1.1 Mailbox unavailable"

OnData = Callable[[Envelope, EmailMessage], "str | None | Awaitable[str | None]"]


# ---------------------------------------------------------------------------------------------------------------
# Certificates


class TestCA:
    """A trustme CA whose PEM bundle lives at `.cert_file` (what tests put in SSL_CERT_FILE)."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self._ca = trustme.CA()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.pem"
        self._ca.cert_pem.write_to_path(str(path))
        self.cert_file = str(path)
        self._leaves: dict[tuple[str, ...], trustme.LeafCert] = {}

    def server_context(self, hostnames: Iterable[str] = DEFAULT_HOSTNAMES) -> ssl.SSLContext:
        """A server-side context with a certificate for `hostnames`, issued by this CA."""
        key = tuple(hostnames)
        if key not in self._leaves:
            self._leaves[key] = self._ca.issue_cert(*key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._leaves[key].configure_cert(context)
        return context

    def server_files(self, directory: Path, hostnames: Iterable[str] = DEFAULT_HOSTNAMES) -> tuple[str, str]:
        """(certificate chain, private key) PEM files for `hostnames`, issued by this CA (for *_TLS_CERT/_KEY)."""
        leaf = self._ca.issue_cert(*hostnames)
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "server-cert.pem", directory / "server-key.pem"
        for blob in leaf.cert_chain_pems:
            with cert.open("ab") as f:
                f.write(blob.bytes())
        leaf.private_key_pem.write_to_path(str(key))
        return str(cert), str(key)

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA (for tests that speak TLS themselves)."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context


def make_ca(where: Path | pytest.TempPathFactory, name: str = "ca") -> TestCA:
    """A fresh test CA; `where` is a directory or pytest's tmp_path_factory."""
    directory = where.mktemp(name) if isinstance(where, pytest.TempPathFactory) else Path(where)
    return TestCA(directory, name)


@pytest.fixture(scope="session", name="mail_ca")
def mail_ca_fixture(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The CA tests trust (monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file))."""
    return make_ca(tmp_path_factory, "trusted-ca")


@pytest.fixture(scope="session", name="untrusted_ca")
def untrusted_ca_fixture(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A second CA nobody trusts: its certificates look "self-signed" to the client."""
    return make_ca(tmp_path_factory, "untrusted-ca")


@pytest.fixture(name="trust_mail_ca")
def trust_mail_ca_fixture(mail_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> TestCA:
    """`mail_ca`, with SSL_CERT_FILE pointing at it for this test."""
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file)
    return mail_ca


# ---------------------------------------------------------------------------------------------------------------
# Mailbox


@dataclass(frozen=True)
class Delivery:
    """One accepted message with its envelope."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    login: str | None = None


class Mailbox:
    """Collects what a test server accepted; `wait_for` wakes on delivery (an asyncio.Condition, no polling).

    Lives in the test's event loop: deliver only from that loop (the servers here do)."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._changed = asyncio.Condition()

    @property
    def messages(self) -> list[EmailMessage]:
        return [d.message for d in self.deliveries]

    @property
    def envelopes(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(d.mail_from, d.rcpt_tos) for d in self.deliveries]

    async def deliver(self, delivery: Delivery) -> None:
        async with self._changed:
            self.deliveries.append(delivery)
            self._changed.notify_all()

    def find(self, predicate: Callable[[EmailMessage], bool] | None = None) -> Delivery | None:
        for delivery in self.deliveries:
            if predicate is None or predicate(delivery.message):
                return delivery
        return None

    async def wait_for_delivery(
        self, predicate: Callable[[EmailMessage], bool] | None = None, timeout: float = 10
    ) -> Delivery:
        """The first delivery (already here or still to come) whose message matches `predicate`."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: self.find(predicate) is not None)
        found = self.find(predicate)
        assert found is not None
        return found

    async def wait_for(
        self, predicate: Callable[[EmailMessage], bool] | None = None, timeout: float = 10
    ) -> EmailMessage:
        """The first message (already here or still to come) matching `predicate`; TimeoutError after `timeout`."""
        return (await self.wait_for_delivery(predicate, timeout)).message


# ---------------------------------------------------------------------------------------------------------------
# Servers


class RecordingHandler:
    """aiosmtpd handler: refuses configured senders/recipients, hands accepted messages to a Mailbox."""

    def __init__(
        self,
        mailbox: Mailbox | None,
        *,
        refuse_mail_from: Collection[str] | Mapping[str, str] = (),
        refuse_rcpt: Collection[str] | Mapping[str, str] = (),
        on_data: OnData | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.refuse_mail_from = _replies(refuse_mail_from, DEFAULT_SENDER_REFUSAL)
        self.refuse_rcpt = _replies(refuse_rcpt, DEFAULT_RECIPIENT_REFUSAL)
        self.on_data = on_data

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        refusal = self.refuse_mail_from.get(address.lower())
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.refuse_rcpt.get(address.lower())
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        if self.on_data is not None:
            reply = self.on_data(envelope, message)
            if inspect.isawaitable(reply):
                reply = await reply
            if reply is not None:
                return reply
        if self.mailbox is not None:
            login = session.login_data.decode() if isinstance(session.login_data, bytes) else session.login_data
            await self.mailbox.deliver(
                Delivery(envelope.mail_from or "", tuple(envelope.rcpt_tos), message, raw, login)
            )
        return "250 OK: queued"


def _replies(spec: Collection[str] | Mapping[str, str], default: str) -> dict[str, str]:
    if isinstance(spec, Mapping):
        return {address.lower(): reply for address, reply in spec.items()}
    return {address.lower(): default for address in spec}


def password_authenticator(
    users: Mapping[str, str], failure_reply: str = DEFAULT_AUTH_FAILURE
) -> Callable[..., AuthResult]:
    """An aiosmtpd authenticator for PLAIN/LOGIN; wrong credentials get `failure_reply` (e.g. a Gmail-style 534)."""

    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            login = data.login.decode("utf-8", "replace")
            password = data.password.decode("utf-8", "replace")
            if users.get(login) == password:
                return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False, message=failure_reply)

    return authenticate


class _TrackedServer:
    """An asyncio server plus the connections it accepted, so close() ends every session (no stray tasks)."""

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.protocols: list[asyncio.BaseProtocol] = []

    def track(self, protocol: asyncio.BaseProtocol) -> asyncio.BaseProtocol:
        self.protocols.append(protocol)
        return protocol

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        tasks: list[asyncio.Future[Any]] = []
        for protocol in self.protocols:
            transport = getattr(protocol, "transport", None)
            if transport is not None and not transport.is_closing():
                transport.close()
            original = getattr(protocol, "_original_transport", None)  # the TCP transport under STARTTLS
            if original is not None and not original.is_closing():
                original.close()
            task = getattr(protocol, "_handler_coroutine", None)
            if task is not None:
                task.cancel()
                tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


@dataclass
class RunningServer:
    """A server listening on `host`:`port`; `await close()` stops it and ends its sessions."""

    host: str
    port: int
    security: str
    _tracked: _TrackedServer = field(repr=False)

    async def close(self) -> None:
        await self._tracked.close()

    async def __aenter__(self) -> RunningServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_smtp_server(
    *,
    mailbox: Mailbox | None = None,
    security: str = "none",
    tls_context: ssl.SSLContext | None = None,
    auth: Mapping[str, str] | None = None,
    auth_failure_reply: str = DEFAULT_AUTH_FAILURE,
    auth_require_tls: bool = True,
    refuse_mail_from: Collection[str] | Mapping[str, str] = (),
    refuse_rcpt: Collection[str] | Mapping[str, str] = (),
    on_data: OnData | None = None,
    require_starttls: bool = False,
    hostname: str = LOCALHOST,
    handler: Any = None,
) -> RunningServer:
    """A real aiosmtpd server on `hostname` (a loopback address) and a free port, in the running loop.

    security: "none" (plain), "starttls" (offers STARTTLS with `tls_context`), "ssl" (implicit TLS with
    `tls_context`). `auth` (username -> password) makes AUTH PLAIN/LOGIN required; wrong credentials get
    `auth_failure_reply`. AUTH is offered only over TLS unless `auth_require_tls=False`. Refusal collections take
    addresses (default 550 replies) or address -> reply mappings (e.g. {"a@x": "451 4.3.0 Try later"}).
    `handler` replaces the recording handler entirely."""
    if security not in ("none", "starttls", "ssl"):
        raise ValueError(f"unknown security {security!r}")
    if security != "none" and tls_context is None:
        raise ValueError(f"security={security!r} needs a tls_context (e.g. mail_ca.server_context())")
    if handler is None:
        handler = RecordingHandler(mailbox, refuse_mail_from=refuse_mail_from, refuse_rcpt=refuse_rcpt, on_data=on_data)
    # aiosmtpd only counts STARTTLS as "TLS" for auth_require_tls; on an implicit-TLS port the whole session is TLS.
    require_tls_for_auth = auth_require_tls and security != "ssl"
    loop = asyncio.get_running_loop()
    tracked = _TrackedServer()

    def factory() -> asyncio.BaseProtocol:
        with warnings.catch_warnings():
            # "AUTH without TLS" is aiosmtpd's (wrong) view of implicit TLS, or what the test asked for.
            warnings.simplefilter("ignore", UserWarning)
            smtp = SMTP(
                handler,
                hostname="localhost",
                tls_context=tls_context if security == "starttls" else None,
                require_starttls=require_starttls and security == "starttls",
                authenticator=password_authenticator(auth, auth_failure_reply) if auth is not None else None,
                auth_required=auth is not None,
                auth_require_tls=require_tls_for_auth,
                timeout=30,
                loop=loop,
            )
        return tracked.track(smtp)

    if security == "ssl":
        tracked.server = await loop.create_server(factory, hostname, 0, ssl=tls_context, ssl_handshake_timeout=10)
    else:
        tracked.server = await loop.create_server(factory, hostname, 0)
    port = tracked.server.sockets[0].getsockname()[1]
    return RunningServer(hostname, port, security, tracked)


class _Silent(asyncio.Protocol):
    """Accepts a connection and never says a word (a firewall black hole, or a server that hangs)."""

    transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


async def start_silent_server(hostname: str = LOCALHOST) -> RunningServer:
    """Accepts TCP connections and never answers: clients waiting for a greeting time out."""
    tracked = _TrackedServer()
    tracked.server = await asyncio.get_running_loop().create_server(lambda: tracked.track(_Silent()), hostname, 0)
    port = tracked.server.sockets[0].getsockname()[1]
    return RunningServer(hostname, port, "none", tracked)


def free_port(hostname: str = LOCALHOST) -> int:
    """A port nothing listens on (bound, read, released): connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((hostname, 0))
        return int(sock.getsockname()[1])


class ServerPool:
    """Starts servers for one test and closes them all at teardown (the `smtp_servers` fixture)."""

    def __init__(self) -> None:
        self._running: list[RunningServer] = []

    async def smtp(self, **kwargs: Any) -> RunningServer:
        server = await start_smtp_server(**kwargs)
        self._running.append(server)
        return server

    async def silent(self) -> RunningServer:
        server = await start_silent_server()
        self._running.append(server)
        return server

    async def close(self) -> None:
        while self._running:
            await self._running.pop().close()


@pytest.fixture(name="smtp_servers")
async def smtp_servers_fixture() -> AsyncIterator[ServerPool]:
    """`await smtp_servers.smtp(security=..., ...)` / `.silent()`; everything is stopped after the test."""
    pool = ServerPool()
    try:
        yield pool
    finally:
        await pool.close()


# The same fixtures under their own names, for `from tests.mailservers import mail_ca` style imports.
mail_ca = mail_ca_fixture
untrusted_ca = untrusted_ca_fixture
trust_mail_ca = trust_mail_ca_fixture
smtp_servers = smtp_servers_fixture
