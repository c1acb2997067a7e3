"""The platform's own mail domains and the addresses on them that the product itself uses."""

from __future__ import annotations

import secrets
from dataclasses import dataclass


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

    def new_tracking_address(self) -> str:
        """A unique, unguessable CC tracking address (80 random bits)."""
        return f"cc-{secrets.token_hex(10)}@{self.tracking}"
