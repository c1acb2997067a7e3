"""Failures a user must hear about: a logged stack trace and a friendly word, never a silent timeout.

Every listener is registered through `guarded`, which catches what the listener raises. (Bolt's own error path
can lose an ack that already happened when the listener fails right after it, and Slack then shows a timeout.)"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_bolt.kwargs_injection.async_args import AsyncArgs
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("handlers.errors")

Listener = Callable[..., Awaitable[None]]
SORRY = "Something went wrong on my side and nothing was changed. Please try again."
# After the ack, part of the work may already be stored: don't claim nothing changed.
SORRY_AFTER = (
    "Something went wrong on my side while finishing this. What was already saved stays saved; "
    "check the channel, and try again if something is missing."
)


def _where(body: dict[str, Any]) -> tuple[str | None, str | None]:
    user = body.get("user_id") or (body.get("user") or {}).get("id")
    channel = (
        body.get("channel_id")
        or (body.get("channel") or {}).get("id")
        or (body.get("container") or {}).get("channel_id")
    )
    return user, channel


async def tell_user(client: AsyncWebClient, body: dict[str, Any], text: str) -> None:
    """Ephemeral in the channel the request came from, else a DM."""
    user, channel = _where(body)
    if not user:
        return
    try:
        if channel:
            await client.chat_postEphemeral(channel=channel, user=user, text=text)
        else:
            await client.chat_postMessage(channel=user, text=text)
    except Exception:  # the user can't be told; the log has it
        log.exception("could not tell %s: %s", user, text)


async def on_error(error: Exception, body: dict[str, Any], client: AsyncWebClient) -> None:
    """Bolt's global error handler (middleware failures and anything `guarded` did not catch)."""
    ref = uuid.uuid4().hex[:8]
    log.error("unhandled error (ref %s) in %s", ref, body.get("type") or body.get("command"), exc_info=error)
    await tell_user(client, body, f":warning: {SORRY} (ref {ref})")


def guarded(listener: Listener) -> Listener:
    """Wrap a listener: failures are logged and told to the user; a missing ack is supplied (a form keeps
    what was typed and shows the problem on its first input)."""
    wanted = list(inspect.signature(listener).parameters)

    async def wrapper(args: AsyncArgs) -> None:
        try:
            await listener(**{name: getattr(args, name) for name in wanted})
        except Exception as exc:
            ref = uuid.uuid4().hex[:8]
            log.error("listener %s failed (ref %s)", listener.__qualname__, ref, exc_info=exc)
            body = args.body
            sorry = SORRY_AFTER
            if args.ack.response is None:
                sorry = SORRY
                view = body.get("view") or {}
                inputs = [b["block_id"] for b in view.get("blocks", []) if b.get("type") == "input"]
                if body.get("type") == "view_submission" and inputs:
                    await args.ack(response_action="errors", errors={inputs[0]: f"{SORRY} (ref {ref})"})
                    return
                await args.ack()
            await tell_user(args.client, body, f":warning: {sorry} (ref {ref})")

    # Not functools.wraps: Bolt would follow __wrapped__ and inject the listener's arguments instead of `args`.
    wrapper.__name__ = wrapper.__qualname__ = getattr(listener, "__qualname__", "listener")
    return wrapper


async def ack_only(ack: AsyncAck) -> None:
    """For "Done" modals: closing them needs nothing but the ack."""
    await ack()
