"""Opening an identity's edit form: from `/identity edit <address>` and from buttons that send people there (the
health message's *Edit* / *Sign in again*). The modal opens at once (a trigger id lives ~3 s), then fills in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import NotFound
from bot.services.policy import IdentityAction, NotPermitted
from bot.services.registry import Services
from handlers.blocks import limits_text, loading_view, problem_view, refused_view
from handlers.identity.form import values_from_identity
from handlers.identity.form_state import FormMeta, FormMode
from handlers.identity.form_view import identity_form
from handlers.identity.sign_in_view import sign_in_offer
from models import Identity

TITLE = "Edit email identity"


async def open_edit_form(
    services: Services, client: AsyncWebClient, *, trigger_id: str, user: str, find: Callable[[], Awaitable[Identity]]
) -> None:
    """Open the edit form of the identity `find` returns (it raises NotFound), for `user` if they may edit it."""
    opened = (await client.views_open(trigger_id=trigger_id, view=loading_view(TITLE)))["view"]
    try:
        identity = await find()
    except NotFound as exc:
        await client.views_update(view_id=opened["id"], view=problem_view(TITLE, str(exc)))
        return
    try:
        await services.policy.require(user, identity, IdentityAction.EDIT)
    except NotPermitted as refusal:
        await client.views_update(view_id=opened["id"], view=refused_view(TITLE, refusal))
        return
    meta = FormMeta(
        mode=FormMode.EDIT,
        identity_id=identity.id,
        channel=identity.notices_channel,
        kind=identity.kind,
        tracking_address=identity.tracking_address,
        sign_in=await services.identities.signed_in_mailbox(identity),
    )
    values = values_from_identity(identity)
    view = identity_form(
        values,
        meta,
        platform_domain=services.domains.platform,
        current_limits=limits_text(identity.hourly_limit, identity.daily_limit),
        sign_in=sign_in_offer(services.sign_in, values.provider, kind=meta.kind, user=user, view_id=opened["id"]),
    )
    await client.views_update(view_id=opened["id"], hash=opened.get("hash"), view=view)
