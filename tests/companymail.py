"""A simulated customer mail system for end-to-end tests, built from real aiosmtpd servers on loopback.

- `submission`: where the identity sends (STARTTLS + AUTH with the mailbox's app password), like smtp.gmail.com.
- `mx`: where mail *to* the company arrives (plain SMTP, no AUTH), like the company's MX. The platform relay
  (RELAY_SMTP_URL) points here. Mail for the identity's mailbox is delivered, and when the customer has set up
  the CC tracking forwarder, a copy is forwarded over SMTP to our inbound server, as Gmail or Exchange would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib
from aiosmtpd.smtp import Envelope

from tests.mailservers import Mailbox, RunningServer, TestCA, start_smtp_server

COMPANY_ADDRESS = "jane@acme.example.com"
FORWARDING_ADDRESS = "sales-inbox@acme.example.com"
APP_PASSWORD = "abcdwxyzefghstuv"  # a Gmail-style 16-character app password


@dataclass
class CompanyMail:
    mailbox: Mailbox
    submission: RunningServer
    mx: RunningServer
    identity_address: str = COMPANY_ADDRESS
    # Where the customer's mailbox forwards copies (the CC tracking address) and our inbound server's address.
    forward_to: str | None = None
    inbound: tuple[str, int] | None = None
    forwarded: list[str] = field(default_factory=list)
    # The submission server's accounts (username -> password), read at every AUTH: change a password at any time.
    logins: dict[str, str] = field(default_factory=dict)

    @property
    def relay_url(self) -> str:
        return f"smtp://{self.mx.host}:{self.mx.port}?security=none"

    async def _on_mx_data(self, envelope: Envelope, message: EmailMessage) -> str | None:
        if self.forward_to and self.inbound and self.identity_address in [r.lower() for r in envelope.rcpt_tos]:
            # The mailbox's forwarder: resend the message as it arrived, to the tracking address.
            await aiosmtplib.send(
                envelope.original_content or b"",
                sender=self.identity_address,
                recipients=[self.forward_to],
                hostname=self.inbound[0],
                port=self.inbound[1],
                start_tls=False,
                use_tls=False,
                timeout=10,
            )
            self.forwarded.append(message.get("Subject", ""))
        return None

    async def close(self) -> None:
        await self.submission.close()
        await self.mx.close()

    def otp_codes(self) -> list[str]:
        """Codes found in OTP emails delivered to the forwarding address, oldest first."""
        import re

        codes = []
        for d in self.mailbox.deliveries:
            if FORWARDING_ADDRESS in d.rcpt_tos and "verification code" in str(d.message.get("Subject", "")):
                m = re.search(r"\b(\d{6})\b", d.message.get_body(("plain",)).get_content())
                if m:
                    codes.append(m.group(1))
        return codes


async def start_company_mail(
    ca: TestCA, *, password: str = APP_PASSWORD, username: str = COMPANY_ADDRESS, submission_security: str = "starttls"
) -> CompanyMail:
    box = Mailbox()
    logins = {username: password}
    submission = await start_smtp_server(
        mailbox=box, security=submission_security, tls_context=ca.server_context(), auth=logins
    )
    company = CompanyMail(mailbox=box, submission=submission, mx=submission, logins=logins)  # mx replaced below
    company.mx = await start_smtp_server(mailbox=box, on_data=company._on_mx_data)
    return company
