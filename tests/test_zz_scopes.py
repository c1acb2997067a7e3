"""Runs last: every Web API method the suite saw the app call is allowed by the manifest's scopes."""

from __future__ import annotations

from tests.conftest import SEEN_METHODS, Bot
from tests.test_manifest import scopes_missing_for


async def test_every_method_the_app_called_is_covered_by_the_manifest(sqlite_bot: Bot) -> None:
    # A flow of its own first, so this test checks something even when run alone.
    view = await sqlite_bot.open_new_identity_form()
    await sqlite_bot.fill_platform_form(view["id"], address="x@platform.example.com")
    mark = sqlite_bot.fake.mark()
    await sqlite_bot.slack.submit(view["id"])
    await sqlite_bot.fake.wait_for("chat.postMessage", after=mark)
    methods = SEEN_METHODS | {c.method for c in sqlite_bot.fake.calls}
    assert {"auth.test", "views.open", "chat.postMessage"} <= methods
    assert scopes_missing_for(methods) == {}
    if len(SEEN_METHODS) > 5:  # the whole suite ran: every declared scope must be used by something
        from tests.test_manifest import METHOD_SCOPES, load_manifest

        used = {METHOD_SCOPES[m] for m in methods} | {"commands", "chat:write.public"}
        declared = set(load_manifest()["oauth_config"]["scopes"]["bot"])
        assert declared <= used, f"scopes declared but never needed: {declared - used}"


def test_the_suites_logs_contain_no_test_password() -> None:
    from tests.companymail import APP_PASSWORD
    from tests.conftest import SUITE_LOG

    text = SUITE_LOG.read_text(encoding="utf-8", errors="replace")
    assert "listening on" in text, "the log file captured the run"
    for secret in (APP_PASSWORD, "wrong-password-123", "test-signing-secret"):
        assert secret not in text
