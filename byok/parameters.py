"""A flow's request parsed with every refusal as `field = value: rule`, pydantic's included
(no Prefect import). Flows take `validate_parameters=False` and call `parse_request` first:
Prefect's own parameter errors name the field and the rule but not the value."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from byok.errors import ByokError, InvalidRequest

ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_VALUE_CHARS = 120


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


class InvalidParameters(InvalidRequest):
    """Several rules broken at once: one `field = value: rule` per problem, joined by '; '."""

    def __init__(self, problems: list[InvalidRequest]) -> None:
        ByokError.__init__(self, "; ".join(str(p) for p in problems))
        self.field, self.value, self.rule = problems[0].field, problems[0].value, problems[0].rule
        self.problems = problems

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.problems,)


def _shown(value: Any) -> Any:
    """The value as the message shows it: long ones cut (a model-level error's input is the
    whole object)."""
    text = repr(value)
    return value if len(text) <= MAX_VALUE_CHARS else _Cut(text[: MAX_VALUE_CHARS - 1] + "…")


class _Cut(str):
    def __repr__(self) -> str:
        return str(self)


def field_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    """`request.target_regions[1].encryption` from pydantic's location."""
    path = prefix
    for item in loc:
        path += f"[{item}]" if isinstance(item, int) else f".{item}" if path else str(item)
    return path


def _problem(prefix: str, error: ErrorDetails) -> InvalidRequest:
    field = field_path(prefix, error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidRequest):  # a validator's own refusal, relative to its model
        inner = f"{field}.{cause.field}" if cause.field else field
        return InvalidRequest(inner, _shown(cause.value), cause.rule)
    value = MISSING if error["type"] == "missing" else _shown(error.get("input"))
    rule = error["msg"].removeprefix("Value error, ")
    return InvalidRequest(field, value, rule)


def problems(exc: ValidationError, prefix: str = "request") -> list[InvalidRequest]:
    """Each of pydantic's errors as an InvalidRequest naming the field, the value and the rule."""
    return [_problem(prefix, e) for e in exc.errors()]


def parse_request(model: type[ModelT], value: Any, prefix: str = "request") -> ModelT:
    """`value` (a model or its JSON form, as a deployment passes it) as `model`; an
    InvalidRequest (InvalidParameters when several rules are broken) otherwise."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value.model_dump() if isinstance(value, BaseModel) else value)
    except ValidationError as exc:
        found = problems(exc, prefix)
        raise (found[0] if len(found) == 1 else InvalidParameters(found)) from None


# The request fields that name a credentials block; a flow's block-typed `credentials`
# parameter (a picker of saved blocks in the UI) takes precedence.
AZURE_BLOCK_NAME = (
    "Name of a saved 'BYOK Azure Credentials' block; empty: the block picked in the flow's "
    "`credentials` parameter."
)
IBM_BLOCK_NAME = (
    "Name of a saved 'BYOK IBM Cloud Credentials' block; empty: the block picked in the flow's "
    "`credentials` parameter."
)
