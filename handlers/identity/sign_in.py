"""The Slack side of "Sign in with Microsoft / Google": the button's click (the modal is remembered, so it can be
updated when the browser comes back), "Use a password instead", and the modal's update in place."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.identities.providers import PROVIDERS
from bot.services.notifier import SignInOutcome
from handlers.identity.form import IdentityFormListeners, draft_from_view, forget_test, values_from_draft
from handlers.identity.form_state import FormMeta, FormValues
from handlers.identity.form_view import identity_form
from handlers.identity.sign_in_view import SignInOffer

log = logging.getLogger(__name__)


def form_snapshot(values: FormValues, meta: FormMeta, view_hash: str | None, limits: str | None) -> str:
    """The modal as the Slack side needs it to draw it again (never a password: FormValues holds none)."""
    return json.dumps({"values": asdict(values), "meta": asdict(meta), "hash": view_hash, "limits": limits})


def signed_in_form(outcome: SignInOutcome, *, platform_domain: str) -> tuple[View, str | None] | None:
    """The modal the sign-in came back to, redrawn with its result, and the hash it must still have."""
    try:
        snapshot = json.loads(outcome.form or "")
        values = FormValues(**{k: v for k, v in snapshot["values"].items() if k in FormValues.__dataclass_fields__})
        meta = FormMeta.loads(json.dumps(snapshot["meta"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # the click never reached us (or an old copy): the next update of the form shows it
    forget_test(meta)  # new credentials: a test of the earlier ones no longer counts
    meta.sign_in = outcome.mailbox or meta.sign_in
    meta.sign_in_problem = None if outcome.mailbox else outcome.problem
    values.provider = outcome.provider
    view = identity_form(
        values,
        meta,
        platform_domain=platform_domain,
        current_limits=snapshot.get("limits"),
        sign_in=SignInOffer(outcome.label, outcome.link),
    )
    return view, snapshot.get("hash")


class SignInListeners:
    def __init__(self, form: IdentityFormListeners) -> None:
        self.form = form
        self.services = form.services

    async def clicked(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The Sign in button (a link: the browser opens it). Remember the modal first, then ack: the browser may
        come back quickly, and the modal is redrawn from what is remembered here."""
        view = body["view"]
        meta = FormMeta.loads(view.get("private_metadata"))
        user = body["user"]["id"]
        values = values_from_draft(draft_from_view(view, meta, user))
        snapshot = form_snapshot(values, meta, view.get("hash"), await self.form._current_limits(meta))
        await self.services.sign_in.remember_form(user, view["id"], snapshot)
        await ack()

    async def use_password(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Back to the SMTP server and password inputs; the modal's sign-in is dropped."""
        await ack()
        view = body["view"]
        meta = FormMeta.loads(view.get("private_metadata"))
        user = body["user"]["id"]
        values = values_from_draft(draft_from_view(view, meta, user))
        await self.services.identities.forget_sign_in(user, view["id"])
        meta.sign_in = meta.sign_in_problem = None
        forget_test(meta)
        provider = PROVIDERS.get(values.provider or "")
        if provider is not None:  # the server inputs come back with the provider's settings
            values.smtp_host = provider.host or ""
            values.smtp_port, values.smtp_security = str(provider.port), provider.security
            meta.smtp_version += 1
        limits = await self.form._current_limits(meta)
        await self.form._update(client, view, self.form.render(values, meta, who=body, limits=limits))


class ModalUpdates:
    """The notifier's side: redraw the modal a sign-in came back to (views.update, never over a newer view)."""

    def __init__(self, client: AsyncWebClient, *, platform_domain: str) -> None:
        self.client = client
        self.platform_domain = platform_domain

    async def sign_in_finished(self, outcome: SignInOutcome) -> None:
        drawn = signed_in_form(outcome, platform_domain=self.platform_domain)
        if drawn is None:
            log.info("sign-in finished for a modal whose form was not remembered; it shows on its next update")
            return
        view, view_hash = drawn
        try:
            await self.client.views_update(view_id=outcome.view_id, hash=view_hash, view=view)
        except Exception as exc:  # hash_conflict (the modal changed meanwhile) or closed: shown on the next update
            log.info("could not update modal %s after the sign-in: %s", outcome.view_id, type(exc).__name__)
