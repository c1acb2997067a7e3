"""A customer's mail system for the demo, on loopback: real aiosmtpd servers, a self-made CA.

- submission: STARTTLS + AUTH with the mailbox's app password (what "Test email setup" and Sending talk to);
- mx: plain SMTP receiving mail for the company's addresses (the platform relay delivers here); when the
  customer has added the CC tracking address as a forwarder, a copy of each message to the identity is forwarded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_certificates(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost. Returns (CA bundle path, server context)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Identity Bot demo CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class MailHost:
    """The customer's mail system. `received` keeps every message, in order."""

    identity_address: str
    users: dict[str, str]
    forward_to: str | None = None
    inbound: tuple[str, int] | None = None
    received: list[Received] = field(default_factory=list)
    submission_port: int = 0
    mx_port: int = 0
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = BytesParser(policy=policy.default).parsebytes(raw)
        self.received.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        self._arrived.set()
        if self.forward_to and self.inbound and self.identity_address in [r.lower() for r in envelope.rcpt_tos]:
            await aiosmtplib.send(
                raw,
                sender=self.identity_address,
                recipients=[self.forward_to],
                hostname=self.inbound[0],
                port=self.inbound[1],
                start_tls=False,
                timeout=10,
            )
        return "250 OK: queued"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.users.get(data.login.decode()) == data.password.decode()
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 235 or 535 itself

    async def start(self, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()

        def submission() -> SMTP:
            return SMTP(
                self,
                hostname="mail.northwind.example",
                tls_context=tls,
                require_starttls=True,
                authenticator=self._authenticate,
                auth_required=True,
                loop=loop,
            )

        def mx() -> SMTP:
            return SMTP(self, hostname="mx.northwind.example", loop=loop)

        for factory in (submission, mx):
            self._servers.append(await loop.create_server(factory, "127.0.0.1", 0))
        self.submission_port = self._servers[0].sockets[0].getsockname()[1]
        self.mx_port = self._servers[1].sockets[0].getsockname()[1]

    async def wait_for(self, subject_part: str, *, after: int = 0, timeout: float = 10) -> Received:
        """The first message received at index >= after whose subject contains `subject_part`."""
        async with asyncio.timeout(timeout):
            while True:
                for r in self.received[after:]:
                    if subject_part in str(r.message.get("Subject", "")):
                        return r
                self._arrived.clear()
                await self._arrived.wait()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
