"""The limits feature's ids: the Change limits modal and the approval request's buttons. Each string is typed once."""

from __future__ import annotations

from enum import StrEnum


class Limits(StrEnum):
    open = "limits-open"  # "Change limits" on the identity panel
    callback = "limits-form"
    done_callback = "limits-form-done"
    hourly_limit = "hourly_limit"
    daily_limit = "daily_limit"
    reason = "reason"
    until = "until"  # optional: the last day of a time-boxed increase
    approve = "limit-request-approve"
    deny = "limit-request-deny"
    decision_block = "decision"
    end_increase = "limit-increase-end"  # a manager ends a running time-boxed increase early
    request_increase = "limit-notice-request-increase"  # on the "limit reached" notice: the limits modal, prefilled
    notice_actions = "limit-notice-actions"
