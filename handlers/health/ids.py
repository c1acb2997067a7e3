"""The health feature's ids: the buttons of health messages. Each string is typed once."""

from __future__ import annotations

from enum import StrEnum


class Health(StrEnum):
    rerun = "health-rerun"  # Re-run checks (creator or manager)
    resume = "health-resume"  # Resume a paused identity (managers only, behind a confirmation)
    edit = "health-edit"  # Edit / Sign in again: opens the identity's edit form
    actions = "health-actions"
    status_block = "health"  # the Health line of the panel and of /identity show
