"""Auto create: a free platform-domain address derived from the sender's display name."""

from __future__ import annotations

from sqlalchemy import select

from bot.mail.domains import PlatformDomains
from bot.services.identities.validation import local_part_from_name
from models import Database, Identity


async def suggest_address(db: Database, domains: PlatformDomains, display_name: str | None) -> str:
    """jane.doe@…, then jane.doe2@…, jane.doe3@… until one is free."""
    local = local_part_from_name(display_name or "")
    platform = domains.platform
    async with db.session() as session:
        taken = set(
            (await session.scalars(select(Identity.address).where(Identity.address.like(f"{local}%@{platform}")))).all()
        )
    candidate, n = f"{local}@{platform}", 1
    while candidate in taken:
        n += 1
        candidate = f"{local}{n}@{platform}"
    return candidate
