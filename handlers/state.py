"""Reading what the user entered in a modal (view.state.values), whatever the element type."""

from __future__ import annotations

from typing import Any

from handlers.blocks import base_block_id


def element_value(state: dict[str, Any]) -> Any:
    kind = state.get("type")
    if kind in ("static_select", "radio_buttons", "external_select"):
        option = state.get("selected_option")
        return option.get("value") if option else None
    if kind == "checkboxes":
        return [o.get("value") for o in state.get("selected_options") or []]
    if kind == "conversations_select":
        return state.get("selected_conversation")
    if kind == "channels_select":
        return state.get("selected_channel")
    if kind == "users_select":
        return state.get("selected_user")
    if kind == "datepicker":
        return state.get("selected_date")
    return state.get("value")


def read_state(view: dict[str, Any]) -> dict[str, Any]:
    """{base block_id: value} for every input in the view (versioned block_ids folded to their base)."""
    out: dict[str, Any] = {}
    for block_id, actions in (view.get("state") or {}).get("values", {}).items():
        for state in actions.values():
            out[base_block_id(block_id)] = element_value(state)
    return out


def block_ids(view: dict[str, Any]) -> dict[str, str]:
    """{base block_id: actual block_id} of the view's blocks, to address errors to the right input."""
    return {base_block_id(b["block_id"]): b["block_id"] for b in view.get("blocks", []) if b.get("block_id")}


def errors_for_view(view: dict[str, Any], errors: dict[str, str], *, fallback: str) -> dict[str, str]:
    """Map field errors to the view's input block_ids; errors for fields not in the view go to `fallback`."""
    ids = block_ids(view)
    inputs = {b["block_id"] for b in view.get("blocks", []) if b.get("type") == "input"}
    out: dict[str, str] = {}
    for field, message in errors.items():
        target = ids.get(field) or ""
        if target not in inputs:
            target = ids.get(fallback, fallback)
        out[target] = f"{out[target]} {message}" if target in out else message
    return out
