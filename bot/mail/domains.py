"""The platform's own mail domains and the addresses on them that the product itself uses."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

# Per-recipient return paths (VERP): bounces+<token>@<platform domain>. The token is 80 random bits, hex.
RETURN_PATH_LOCAL = "bounces"
_RETURN_PATH = re.compile(rf"^{RETURN_PATH_LOCAL}\+([0-9a-f]{{20}})@(.+)$")
# One-click unsubscribe by mail (RFC 8058's mailto: alternative): unsubscribe+<token>@<platform domain>. The token is
# 128 random bits, lower-case hex (mail systems may change the case of a local part; hex survives that).
UNSUBSCRIBE_LOCAL = "unsubscribe"
_UNSUBSCRIBE = re.compile(rf"^{UNSUBSCRIBE_LOCAL}\+([0-9a-f]{{32}})@(.+)$")


def new_unsubscribe_token() -> str:
    return secrets.token_hex(16)


def new_verp_token() -> str:
    return secrets.token_hex(10)


@dataclass(frozen=True)
class PlatformDomains:
    """`platform`: where auto-created identity addresses live and the platform's own mail comes from;
    `tracking`: where CC tracking addresses live (often the same domain)."""

    platform: str
    tracking: str

    @property
    def sender(self) -> str:
        """The platform's own From address: one-time passwords, response emails, forwarded leads."""
        return f"noreply@{self.platform}"

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.platform, self.tracking)))

    def is_own(self, address: str) -> bool:
        """Whether the address is on one of our domains (mail to it arrives at our inbound server)."""
        return address.rpartition("@")[2].strip().lower().rstrip(".") in self.all

    def return_path(self, token: str) -> str:
        """The envelope sender that brings a bounce of one recipient's copy back to us, naming it."""
        return f"{RETURN_PATH_LOCAL}+{token}@{self.platform}"

    def return_path_token(self, address: str) -> str | None:
        """The token of one of our return paths, or None for any other address."""
        match = _RETURN_PATH.match(address.strip().strip("<>").lower())
        return match.group(1) if match and match.group(2).rstrip(".") == self.platform else None

    @property
    def mailer_daemon(self) -> str:
        """Where the platform's delivery status notifications come from."""
        return f"MAILER-DAEMON@{self.platform}"

    def unsubscribe_address(self, token: str) -> str:
        """The mailto: of a List-Unsubscribe header: mail to it unsubscribes the recipient the token was made for."""
        return f"{UNSUBSCRIBE_LOCAL}+{token}@{self.platform}"

    def unsubscribe_token(self, address: str) -> str | None:
        """The token of one of our unsubscribe addresses, or None for any other address."""
        match = _UNSUBSCRIBE.match(address.strip().strip("<>").lower())
        return match.group(1) if match and match.group(2).rstrip(".") == self.platform else None

    def new_tracking_address(self) -> str:
        """A unique, unguessable CC tracking address (80 random bits)."""
        return f"cc-{secrets.token_hex(10)}@{self.tracking}"
