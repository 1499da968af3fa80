"""OpenAPI links: from an answer to the operations that act on what its body names.

A link says which operation to call next and where its parameters come from in the
answer (`$response.body#/id`): an invocation just accepted can be read, cancelled and
retried; a schedule read can be triggered, paused, resumed and deleted. Clients that
follow links, and schemathesis's stateful phase, chain calls through them. The names
below are the document's `components/links`; `gateway.operations.Operation.links` names
them per answer.
"""

from __future__ import annotations

from typing import Any

_INVOCATION_ID = {"invocation_id": "$response.body#/id"}
_SCHEDULE_ID = {"schedule_id": "$response.body#/id"}
#: Name -> the operation it leads to, its parameters (runtime expressions), what it does.
LINKS: dict[str, tuple[str, dict[str, str], str]] = {
    "GetInvocation": ("get_invocation", _INVOCATION_ID, "Read this invocation."),
    "CancelInvocation": ("cancel_invocation", _INVOCATION_ID, "Cancel this invocation."),
    "RetryInvocation": ("retry_invocation", _INVOCATION_ID, "Queue this invocation again."),
    "GetFirstInvocation": (
        "get_invocation",
        {"invocation_id": "$response.body#/invocations/0/id"},
        "Read the first invocation in `invocations` (of a page, or that a trigger made).",
    ),
    "GetListedSchedule": (
        "get_schedule",
        {"schedule_id": "$response.body#/schedules/0/id"},
        "Read the first schedule of the list.",
    ),
    "GetSchedule": ("get_schedule", _SCHEDULE_ID, "Read this schedule."),
    "TriggerSchedule": ("trigger_schedule", _SCHEDULE_ID, "Run this schedule now."),
    "PauseSchedule": ("pause_schedule", _SCHEDULE_ID, "Pause this schedule."),
    "ResumeSchedule": ("resume_schedule", _SCHEDULE_ID, "Resume this schedule."),
    "DeleteSchedule": ("delete_schedule", _SCHEDULE_ID, "Stop this schedule until restored."),
}
INVOCATION_LINKS = ("GetInvocation", "CancelInvocation", "RetryInvocation")
SCHEDULE_LINKS = ("GetSchedule", "TriggerSchedule", "PauseSchedule", "ResumeSchedule")


def components_links() -> dict[str, Any]:
    """The document's `components/links`."""
    return {
        name: {"operationId": operation, "parameters": dict(parameters), "description": text}
        for name, (operation, parameters, text) in LINKS.items()
    }
