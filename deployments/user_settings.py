"""The settings a user owns of a scheduled deployment, read from Prefect variables at deploy
time, so that `prefect deploy` (a CI redeploy) keeps them instead of resetting them.

prefect.yaml passes `{{ prefect.variables.NAME }}` placeholders to this build step; Prefect
resolves a whole-value placeholder of a JSON variable to its value and a missing variable to
"" (prefect/utilities/templating/__init__.py, resolve_variables), which here means "not set":
schedule inactive, an empty request (the server ignores required fields of a deployment's
parameters; a run needs them). Plain Python: `prefect deploy` loads it by path.
"""

from __future__ import annotations

from typing import Any

NOT_SET = ""


def schedule_settings(active: Any = NOT_SET, request: Any = NOT_SET) -> dict[str, Any]:
    """`active` (JSON true/false) and `request` (a JSON object, the flow's request parameter),
    defaults filled in, for the deployment's schedule and parameters."""
    if active == NOT_SET:
        active = False
    if not isinstance(active, bool):
        raise ValueError(f"active = {active!r}: must be the JSON value true or false")
    if request != NOT_SET and not isinstance(request, dict):
        raise ValueError(f"request = {request!r}: must be a JSON object of the flow's request")
    return {"active": active, "request": {} if request == NOT_SET else request}
