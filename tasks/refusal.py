"""A refused request ends its run Failed with the one-line `ByokError` message, with no
traceback in the run's logs: the flow returns `Failed(message=…)` instead of raising. Called
directly (or as a subflow), the flow still raises the same error."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

from prefect.states import Failed

from byok.errors import ByokError

P = ParamSpec("P")
R = TypeVar("R")


def refuse_quietly(body: Callable[P, R]) -> Callable[P, R]:
    """Wrap a flow's function (under `@flow`): a `ByokError` becomes its Failed state."""

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return body(*args, **kwargs)
        except ByokError as exc:
            return cast(R, Failed(message=str(exc), data=exc))

    return run
