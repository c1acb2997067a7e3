"""manifest.yml is a valid Slack app manifest and matches what the code does."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from handlers.home.ids import HOME_OPENED
from handlers.identity.ids import COMMAND

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT.parent / "shared" / "slack" / "manifest.schema.1.0.0.json"
LOCAL_SCHEMA = ROOT / "tests" / "data" / "manifest.schema.1.0.0.json"

# Which bot scope each Web API method needs (https://api.slack.com/methods). None: no scope needed.
METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "apps.connections.open": None,  # Socket Mode: called with the app-level token (connections:write), no bot scope
    "views.open": None,
    "views.update": None,
    "views.push": None,
    "views.publish": None,
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "conversations.open": "im:write",
    "users.info": "users:read",
    "usergroups.users.list": "usergroups:read",
}


def load_manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def test_manifest_is_valid_against_slacks_schema() -> None:
    schema_path = SCHEMA if SCHEMA.exists() else LOCAL_SCHEMA
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(load_manifest(), schema)


def test_manifest_declares_the_command_and_interactivity_the_code_uses() -> None:
    manifest = load_manifest()
    commands = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert commands == [COMMAND]
    assert manifest["features"]["slash_commands"][0]["usage_hint"]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    # The App Home: the event it is drawn on, and the tab itself.
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == [HOME_OPENED]
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True


def scopes_missing_for(methods: set[str]) -> dict[str, str]:
    granted = set(load_manifest()["oauth_config"]["scopes"]["bot"])
    missing: dict[str, str] = {}
    for method in sorted(methods):
        assert method in METHOD_SCOPES, f"the app called {method}: add its scope to METHOD_SCOPES and the manifest"
        scope = METHOD_SCOPES[method]
        if scope is not None and scope not in granted:
            missing[method] = scope
    return missing


def test_scope_check_notices_a_missing_scope() -> None:
    assert scopes_missing_for({"chat.postMessage"}) == {}
    assert "nonexistent:scope" not in load_manifest()["oauth_config"]["scopes"]["bot"]
    # A method whose scope is not granted is reported.
    METHOD_SCOPES["test.fake"] = "nonexistent:scope"
    try:
        assert scopes_missing_for({"test.fake"}) == {"test.fake": "nonexistent:scope"}
    finally:
        del METHOD_SCOPES["test.fake"]
