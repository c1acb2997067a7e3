"""The App Home's ids. Limits, credentials and Approve / Deny reuse their features' action ids (the same listeners
answer them wherever they are clicked). Each string is typed once."""

from __future__ import annotations

from enum import StrEnum

HOME_OPENED = "app_home_opened"


class Home(StrEnum):
    new_identity = "home-new-identity"
    show = "home-show"
    verify = "home-verify"
    edit = "home-edit"
    page = "home-page"  # Previous / Next: the value is the page to show
    show_callback = "home-identity-shown"
    top_actions = "home-actions"
    nav_actions = "home-pages"

    @staticmethod
    def identity_block(identity_id: int) -> str:
        return f"home-identity-{identity_id}"

    @staticmethod
    def identity_actions(identity_id: int) -> str:
        return f"home-identity-{identity_id}-actions"

    @staticmethod
    def request_actions(request_id: int) -> str:
        return f"home-request-{request_id}-actions"
