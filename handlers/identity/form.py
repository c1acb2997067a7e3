"""Listeners of the identity modal: kind and provider switches, Auto create, Test email setup, Save changes."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import FormErrors
from bot.services.identities import IdentityDraft
from bot.services.identities.providers import PROVIDERS
from bot.services.policy import NotPermitted
from bot.services.registry import Services
from handlers.blocks import limits_text, refused_view
from handlers.identity.form_state import FormMeta, FormMode, FormValues, SetupTest
from handlers.identity.form_view import identity_form, saved_view
from handlers.identity.ids import IdentityForm as F
from handlers.identity.sign_in_view import sign_in_offer
from handlers.state import errors_for_view, read_state
from models import Identity, IdentityKind, SmtpSecurity

log = logging.getLogger(__name__)


def draft_from_view(view: dict[str, Any], meta: FormMeta, user: str | None = None) -> IdentityDraft:
    """What the modal holds; `user` (the Slack user acting) finds the modal's own sign-in, if it uses one."""
    values = read_state(view)
    return IdentityDraft(
        use_sign_in=bool(meta.sign_in),
        sign_in_user=user,
        sign_in_view=view.get("id"),
        kind=values.get(F.kind) or meta.kind,
        display_name=values.get(F.display_name),
        company_name=values.get(F.company_name),
        address=values.get(F.address),
        hourly_limit=values.get(F.hourly_limit),
        daily_limit=values.get(F.daily_limit),
        forwarding_address=values.get(F.forwarding_address),
        notices_channel=values.get(F.notices_channel),
        esp_provider=values.get(F.provider),
        smtp_host=values.get(F.smtp_host),
        smtp_port=values.get(F.smtp_port),
        smtp_security=values.get(F.smtp_security),
        smtp_username=values.get(F.smtp_username),
        smtp_password=values.get(F.smtp_password),
        tracking_address=meta.tracking_address,
        tested_fingerprint=meta.tested,
    )


def values_from_draft(draft: IdentityDraft) -> FormValues:
    """What to show again when the form is rebuilt (never the password: Slack keeps what was typed there)."""
    return FormValues(
        kind=draft.kind,
        display_name=draft.display_name,
        company_name=draft.company_name,
        address=draft.address,
        hourly_limit=draft.hourly_limit,
        daily_limit=draft.daily_limit,
        forwarding_address=draft.forwarding_address,
        notices_channel=draft.notices_channel,
        provider=draft.esp_provider,
        smtp_host=draft.smtp_host,
        smtp_port=draft.smtp_port,
        smtp_security=draft.smtp_security,
        smtp_username=draft.smtp_username,
    )


def values_from_identity(identity: Identity) -> FormValues:
    return FormValues(
        kind=identity.kind,
        display_name=identity.display_name,
        company_name=identity.company_name,
        address=identity.address,
        forwarding_address=identity.forwarding_address,
        notices_channel=identity.notices_channel,
        provider=identity.esp_provider,
        smtp_host=identity.smtp_host,
        smtp_port=str(identity.smtp_port) if identity.smtp_port else None,
        smtp_security=identity.smtp_security,
        smtp_username=identity.smtp_username,
    )


def forget_test(meta: FormMeta) -> None:
    """The settings are being replaced: drop the last test's result (and its fingerprint)."""
    meta.test_state, meta.test_message, meta.tested = SetupTest.NOT_RUN, None, None


class IdentityFormListeners:
    """Everything the identity modal sends while it is open."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def render(  # type: ignore[no-untyped-def]
        self,
        values: FormValues,
        meta: FormMeta,
        *,
        who: dict[str, Any],
        notice: str | None = None,
        limits: str | None = None,
    ):
        """The form; `who` is the interaction's body (whose modal it is, for the sign-in link)."""
        offer = sign_in_offer(
            self.services.sign_in, values.provider, kind=meta.kind, user=who["user"]["id"], view_id=who["view"]["id"]
        )
        return identity_form(
            values,
            meta,
            platform_domain=self.services.domains.platform,
            notice=notice,
            current_limits=limits,
            sign_in=offer,
        )

    async def _current_limits(self, meta: FormMeta) -> str | None:
        if meta.identity_id is None:
            return None
        identity = await self.services.identities.get(meta.identity_id)
        return limits_text(identity.hourly_limit, identity.daily_limit)

    async def _update(self, client: AsyncWebClient, view: dict[str, Any], new_view: Any) -> dict[str, Any] | None:
        try:
            resp = await client.views_update(view_id=view["id"], hash=view.get("hash"), view=new_view)
            return resp["view"]
        except SlackApiError as exc:
            if exc.response.get("error") == "hash_conflict":
                log.info("view %s changed meanwhile; not overwriting it", view["id"])
                return None
            raise

    async def _password_again(self, meta: FormMeta, draft: IdentityDraft) -> Identity | None:
        """Editing: whether the form now points away from where the saved password was saved for (it must then be
        typed again). Returns the stored identity."""
        if meta.identity_id is None:
            return None
        stored = await self.services.identities.get(meta.identity_id)
        meta.password_again = not self.services.identities.keeps_password(stored, draft)
        return stored

    async def kind_changed(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Platform ↔ company: rebuild the form in place, keeping what was typed."""
        await ack()
        view = body["view"]
        meta = FormMeta.loads(view.get("private_metadata"))
        draft = draft_from_view(view, meta)
        meta.kind = draft.kind
        meta.address_version += 1  # the address input changes type: give it a fresh block_id
        forget_test(meta)
        meta.sign_in = meta.sign_in_problem = None
        if meta.kind == IdentityKind.COMPANY and not meta.tracking_address:
            meta.tracking_address = self.services.identities.new_tracking_address()
        values = values_from_draft(draft)
        if meta.kind == IdentityKind.COMPANY and not values.provider:
            values.provider, values.smtp_port, values.smtp_security = "other", "587", SmtpSecurity.STARTTLS
        await self._update(client, view, self.render(values, meta, who=body))

    async def provider_changed(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """A provider fills host, port and security (they stay editable)."""
        await ack()
        view = body["view"]
        meta = FormMeta.loads(view.get("private_metadata"))
        draft = draft_from_view(view, meta)
        values = values_from_draft(draft)
        provider = PROVIDERS.get(draft.esp_provider or "")
        forget_test(meta)  # new server settings: an earlier result (or a test still running) no longer applies
        meta.sign_in = meta.sign_in_problem = None  # a sign-in belongs to the provider it was made with
        if provider is not None:
            values.smtp_host = provider.host or ""
            values.smtp_port, values.smtp_security = str(provider.port), provider.security
            meta.smtp_version += 1  # new block_ids, so Slack shows the provider's values
            draft.smtp_host, draft.smtp_port, draft.smtp_security = (
                values.smtp_host,
                values.smtp_port,
                values.smtp_security,
            )
        await self._password_again(meta, draft)
        await self._update(client, view, self.render(values, meta, who=body, limits=await self._current_limits(meta)))

    async def auto_create(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Fills the address with a free one derived from the display name, keeping everything else typed."""
        await ack()
        view = body["view"]
        meta = FormMeta.loads(view.get("private_metadata"))
        draft = draft_from_view(view, meta)
        values = values_from_draft(draft)
        notice = None
        if (draft.display_name or "").strip():
            values.address = await self.services.identities.suggest_address(draft.display_name)
            meta.address_version += 1  # a new block_id, so Slack shows the new value instead of what was typed
        else:
            notice = "Enter the sender's display name first, then click Auto create."
        await self._update(client, view, self.render(values, meta, who=body, notice=notice))

    async def test_setup(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Ack at once, show "Testing…", run a real SMTP session, then show the result in the modal."""
        await ack()
        view = body["view"]
        meta = FormMeta.loads(view.get("private_metadata"))
        draft = draft_from_view(view, meta, body["user"]["id"])
        values = values_from_draft(draft)
        limits = await self._current_limits(meta)
        stored = await self._password_again(meta, draft)
        meta.test_state, meta.test_message, meta.tested = SetupTest.TESTING, None, None
        testing = await self._update(client, view, self.render(values, meta, who=body, limits=limits))
        if testing is None:
            return
        user = body["user"]["id"]
        try:
            result, fingerprint = await self.services.identities.test_setup(draft, stored=stored, actor=user)
        except NotPermitted as refusal:
            await self._update(client, testing, refused_view("Edit email identity", refusal))
            return
        meta.test_state = SetupTest.PASSED if result.ok else SetupTest.FAILED
        meta.test_message = result.message
        meta.tested = fingerprint
        await self._update(client, testing, self.render(values, meta, who=body, limits=limits))

    async def save(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: dict[str, Any]) -> None:
        meta = FormMeta.loads(view.get("private_metadata"))
        user = body["user"]["id"]
        draft = draft_from_view(view, meta, user)
        identities = self.services.identities
        try:
            if meta.mode == FormMode.EDIT and meta.identity_id is not None:
                updated = await identities.update(meta.identity_id, draft, actor=user)
                await ack(
                    response_action="update",
                    view=saved_view(
                        updated.identity.address,
                        updated.identity.notices_channel,
                        increase_requested=None,
                        edited=True,
                    ),
                )
                await identities.announce_update(updated, actor=user)
                await self.services.verification.after_update(updated, actor=user)
                return
            created = await identities.create(draft, actor=user, team_id=body["team"]["id"], view_id=view["id"])
        except FormErrors as exc:
            await ack(response_action="errors", errors=errors_for_view(view, exc.errors, fallback=F.display_name))
            return
        except NotPermitted as refusal:
            await ack(response_action="update", view=refused_view("Edit email identity", refusal))
            return
        request = created.limit_request
        increase = limits_text(request.requested_hourly, request.requested_daily) if request else None
        await ack(
            response_action="update",
            view=saved_view(
                created.identity.address,
                created.identity.notices_channel,
                increase_requested=increase,
                tracking_address=created.identity.tracking_address,
            ),
        )
        if not created.duplicate:
            await identities.announce(created)
            if created.limit_request is not None:
                await self.services.limits.post_request(created.limit_request.id)
