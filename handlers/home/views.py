"""The Home tab: the team's identities (newest first, a page at a time) with status, usage against the limits and the
buttons the viewer may use; a New identity button; for managers the limit requests waiting for them.

At most PAGE_SIZE identities (2 blocks each) and MAX_REQUESTS_SHOWN requests (2 blocks each) per page: well under
Slack's 100 blocks per Home view."""

from __future__ import annotations

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.services.home import IdentityRow, TeamOverview
from bot.services.policy import IdentityAction
from handlers.blocks import context, escape, limits_text, slack_date, status_label
from handlers.credentials.ids import Credentials as C
from handlers.home.ids import Home as H
from handlers.identity.ids import COMMAND
from handlers.limits.evidence_view import until_text
from handlers.limits.ids import Limits as L
from handlers.limits.views import decision_actions
from models import Identity, LimitRequest

SHOW_TITLE = "Email identity"


def home_view(overview: TeamOverview) -> View:
    blocks: list[Block] = [
        HeaderBlock(text="Email identities"),
        SectionBlock(
            text=MarkdownTextObject(
                text=f"{overview.total} identit{'y' if overview.total == 1 else 'ies'} in this workspace, newest "
                f"first. `{COMMAND} help` lists the commands."
            )
        ),
        ActionsBlock(
            block_id=H.top_actions,
            elements=[ButtonElement(text="New identity", action_id=H.new_identity, style="primary", value="new")],
        ),
    ]
    if overview.manager and overview.requests:
        blocks.append(HeaderBlock(text="Limit requests waiting for a manager"))
        for request, identity in overview.requests:
            blocks += request_blocks(request, identity, overview.viewer)
    blocks.append(DividerBlock())
    if not overview.rows:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="No identities yet: create one with *New identity*.")))
    for row in overview.rows:
        blocks += identity_blocks(row)
    if overview.pages > 1:
        blocks += page_blocks(overview)
    return View(type="home", blocks=blocks)


def identity_blocks(row: IdentityRow) -> list[Block]:
    identity = row.identity
    usage = (
        f"Last hour *{row.sent_last_hour}* of {identity.hourly_limit} · last 24 h *{row.sent_last_day}* of "
        f"{identity.daily_limit} emails (recipients)"
    )
    pending = ""
    if row.pending is not None:
        pending = (
            "\n:hourglass_flowing_sand: Increase to "
            f"{limits_text(row.pending.requested_hourly, row.pending.requested_daily)}"
            f"{until_text(row.pending)} waiting for a manager"
        )
    text = (
        f"*{escape(identity.display_name)}* <{escape(identity.address)}> — {status_label(identity)}\n{usage}{pending}"
    )
    value = str(identity.id)
    buttons = [ButtonElement(text="Show", action_id=H.show, value=value)]
    if IdentityAction.RUN_STEPS in row.permitted:
        buttons.append(ButtonElement(text="Verify", action_id=H.verify, value=value))
    if IdentityAction.EDIT in row.permitted:
        buttons.append(ButtonElement(text="Edit", action_id=H.edit, value=value))
    if IdentityAction.CHANGE_LIMITS in row.permitted:
        buttons.append(ButtonElement(text="Limits", action_id=L.open, value=value))
    if IdentityAction.CREDENTIALS in row.permitted:
        buttons.append(ButtonElement(text="Get SMTP credentials", action_id=C.open, value=value))
    return [
        SectionBlock(block_id=H.identity_block(identity.id), text=MarkdownTextObject(text=text[:3000])),
        ActionsBlock(block_id=H.identity_actions(identity.id), elements=buttons),
    ]


def request_blocks(request: LimitRequest, identity: Identity, viewer: str) -> list[Block]:
    reason = f"\n_{escape(request.reason[:300])}_" if request.reason else ""
    text = (
        f"*{escape(identity.address)}*: {limits_text(request.previous_hourly, request.previous_daily)} → "
        f"*{limits_text(request.requested_hourly, request.requested_daily)}*{until_text(request)}\n"
        f"Asked by <@{request.requested_by}> on {slack_date(request.created_at)}{reason}"
    )
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=text[:3000]))]
    if request.requested_by == viewer:
        blocks.append(context("Your own request: another manager decides it."))
        return blocks
    blocks.append(decision_actions(identity, request, block_id=H.request_actions(request.id)))
    return blocks


def page_blocks(overview: TeamOverview) -> list[Block]:
    buttons = []
    if overview.page > 0:
        buttons.append(ButtonElement(text="← Previous", action_id=H.page, value=str(overview.page - 1)))
    if overview.page < overview.pages - 1:
        buttons.append(ButtonElement(text="Next →", action_id=H.page, value=str(overview.page + 1)))
    return [
        context(f"Page {overview.page + 1} of {overview.pages}"),
        ActionsBlock(block_id=H.nav_actions, elements=buttons),
    ]


def shown_view(blocks: list[Block]) -> View:
    """*Show*: the identity's overview (as `/identity show` answers it) in a modal."""
    return View(type="modal", callback_id=H.show_callback, title=SHOW_TITLE, close="Close", blocks=blocks[:100])


def note_view(title: str, text: str) -> View:
    return View(type="modal", title=title, close="Close", blocks=[SectionBlock(text=MarkdownTextObject(text=text))])
