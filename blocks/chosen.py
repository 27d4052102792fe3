"""The credentials block a flow run uses: the one picked in the flow's block-typed
`credentials` parameter, else the one its request names.

A parameter typed as a block class is rendered by Prefect's UI as a picker of the saved
blocks, and a run made from a deployment stores only `{"$ref": {"block_document_id": …}}`,
never the block's fields (the flows take `validate_parameters=False`, so the reference
reaches them unresolved and is loaded here)."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from prefect.blocks.core import Block

from byok.validation import InvalidRequest

B = TypeVar("B", bound=Block)


def chosen_block(
    cls: type[B], given: Any, name: str | None, name_field: str, field: str = "credentials"
) -> B:
    """`given` (a block, a `$ref` to a saved one, or a saved block's name) or, when None, the
    saved block called `name` (the request's `name_field`)."""
    if isinstance(given, cls):
        return given
    if given is None and name is None:
        raise InvalidRequest(
            name_field,
            None,
            f"pick a saved '{cls.get_block_type_name()}' block in `{field}`, or name one here",
        )
    if given is None or isinstance(given, str):
        return cast(B, cls.load(given or str(name)))
    ref = given.get("$ref") if isinstance(given, dict) else None
    if not isinstance(ref, dict):
        raise InvalidRequest(
            field,
            "<a block's fields>",
            f"pick a saved '{cls.get_block_type_name()}' block: a run stores only its "
            "reference, never its fields",
        )
    try:
        return cast(B, cls.load_from_ref(ref))
    except ValueError as exc:
        raise InvalidRequest(
            field, ref, f"no saved '{cls.get_block_type_name()}' block: {exc}"
        ) from None
