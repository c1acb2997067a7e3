"""Every Slack Web API method the app calls is allowed by the manifest's scopes. (The whole run's calls, and unused
scopes, are checked when the session finishes: tests/suite_checks.py.)"""

from __future__ import annotations

from tests.conftest import Bot
from tests.test_manifest import scopes_missing_for


async def test_every_method_the_app_called_is_covered_by_the_manifest(sqlite_bot: Bot) -> None:
    view = await sqlite_bot.open_new_identity_form()
    await sqlite_bot.fill_platform_form(view["id"], address="x@platform.example.com")
    mark = sqlite_bot.fake.mark()
    await sqlite_bot.slack.submit(view["id"])
    await sqlite_bot.fake.wait_for("chat.postMessage", after=mark)
    methods = {c.method for c in sqlite_bot.fake.calls}
    assert {"auth.test", "views.open", "chat.postMessage"} <= methods
    assert scopes_missing_for(methods) == {}
