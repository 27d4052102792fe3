"""ARM template expressions: '[func(args).prop[index]]' strings, parsed and evaluated.

Functions: parameters, variables, resourceId, resourceGroup, subscription, concat, reference
(names are case-insensitive, as in ARM). Pure code: the caller supplies what the functions
read through an ExpressionContext."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[(),.\[\]]))"
)


class TemplateError(ValueError):
    """A template that cannot be evaluated; `code` is ARM's error code."""

    def __init__(self, message: str, code: str = "InvalidTemplate") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ExpressionContext:
    """What expressions read: parameter values, raw variables, the deployment's scope and a
    way to read a deployed resource (`reference(id, full)`)."""

    parameters: dict[str, Any]
    variables: dict[str, Any]
    subscription: dict[str, Any]
    resource_group: dict[str, Any]
    reference: Callable[[str, bool], dict[str, Any]]
    variable_cache: dict[str, Any] = field(default_factory=dict)


def is_expression(value: str) -> bool:
    """'[…]' but not the '[[' escape."""
    return value.startswith("[") and value.endswith("]") and not value.startswith("[[")


def evaluate(value: Any, ctx: ExpressionContext) -> Any:
    """A template value with every expression (in strings and object keys) evaluated."""
    if isinstance(value, str):
        if is_expression(value):
            return _Parser(value[1:-1], ctx).parse()
        return value[1:] if value.startswith("[[") else value
    if isinstance(value, list):
        return [evaluate(v, ctx) for v in value]
    if isinstance(value, dict):
        return {str(evaluate(k, ctx)): evaluate(v, ctx) for k, v in value.items()}
    return value


def _tokens(text: str) -> list[tuple[str, str]]:
    found, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:
            raise TemplateError(f"The template language expression '{text}' is not valid.")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        pos = match.end()
    return found


class _Parser:
    """expr := primary ('.' name | '[' expr ']')*; primary := name '(' args ')' | literal."""

    def __init__(self, text: str, ctx: ExpressionContext) -> None:
        self.text, self.ctx = text, ctx
        self.tokens = _tokens(text)
        self.pos = 0

    def parse(self) -> Any:
        value = self._expr()
        if self.pos != len(self.tokens):
            self._fail("unexpected text after the expression")
        return value

    def _fail(self, why: str) -> None:
        raise TemplateError(f"The template language expression '{self.text}' is not valid: {why}.")

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("", "")

    def _take(self, punct: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if not token[0] or (punct is not None and token != ("punct", punct)):
            self._fail(f"expected '{punct}'" if punct else "unexpected end")
        self.pos += 1
        return token

    def _expr(self) -> Any:
        value = self._primary()
        while self._peek() in (("punct", "."), ("punct", "[")):
            if self._take()[1] == ".":
                kind, name = self._take()
                if kind != "name":
                    self._fail("expected a property name after '.'")
                value = _property(value, name, self.text)
            else:
                index = self._expr()
                self._take("]")
                value = _property(value, index, self.text)
        return value

    def _primary(self) -> Any:
        kind, text = self._take()
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "number":
            return int(text)
        if kind != "name":
            self._fail(f"unexpected '{text}'")
        self._take("(")
        args: list[Any] = []
        if self._peek() != ("punct", ")"):
            args.append(self._expr())
            while self._peek() == ("punct", ","):
                self._take(",")
                args.append(self._expr())
        self._take(")")
        function = _FUNCTIONS.get(text.lower())
        if function is None:
            raise TemplateError(f"The template function '{text}' is not known (in '{self.text}').")
        return function(self.ctx, args)


def _property(value: Any, key: Any, text: str) -> Any:
    if isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
        return value[key]
    if isinstance(value, dict):
        for name, item in value.items():
            if name.lower() == str(key).lower():
                return item
    raise TemplateError(
        f"The template language expression '{text}' is not valid: the property '{key}' "
        "does not exist."
    )


def _parameters(ctx: ExpressionContext, args: list[Any]) -> Any:
    name = str(args[0]) if args else ""
    for key, value in ctx.parameters.items():
        if key.lower() == name.lower():
            return value
    raise TemplateError(f"The template parameter '{name}' is not found.")


def _variables(ctx: ExpressionContext, args: list[Any]) -> Any:
    name = str(args[0]) if args else ""
    for key, raw in ctx.variables.items():
        if key.lower() == name.lower():
            if key not in ctx.variable_cache:
                ctx.variable_cache[key] = evaluate(raw, ctx)
            return ctx.variable_cache[key]
    raise TemplateError(f"The template variable '{name}' is not found.")


def resource_id(subscription: str, group: str, args: list[Any]) -> str:
    """resourceId([subscriptionId], [resourceGroupName], type, name1, [name2]…)."""
    strings = [str(a) for a in args]
    at = next((i for i, a in enumerate(strings) if "/" in a and "." in a.split("/")[0]), None)
    if at is None or at > 2:
        raise TemplateError(f"resourceId({', '.join(strings)}): no resource type found.")
    if at == 2:
        subscription, group = strings[0], strings[1]
    elif at == 1:
        group = strings[0]
    namespace, *types = strings[at].split("/")
    names = strings[at + 1 :]
    if len(names) != len(types):
        raise TemplateError(
            f"resourceId: the type '{strings[at]}' needs {len(types)} name(s), got {len(names)}."
        )
    segments = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{namespace}/{segments}"


def _resource_id(ctx: ExpressionContext, args: list[Any]) -> str:
    return resource_id(ctx.subscription["subscriptionId"], ctx.resource_group["name"], args)


def _concat(ctx: ExpressionContext, args: list[Any]) -> Any:
    if args and all(isinstance(a, list) for a in args):
        return [item for a in args for item in a]
    return "".join(str(a) for a in args)


def _reference(ctx: ExpressionContext, args: list[Any]) -> Any:
    if not args:
        raise TemplateError("reference() needs a resource id.")
    full = len(args) > 2 and str(args[2]).lower() == "full"
    return ctx.reference(str(args[0]), full)


_FUNCTIONS: dict[str, Callable[[ExpressionContext, list[Any]], Any]] = {
    "parameters": _parameters,
    "variables": _variables,
    "resourceid": _resource_id,
    "resourcegroup": lambda ctx, args: ctx.resource_group,
    "subscription": lambda ctx, args: ctx.subscription,
    "concat": _concat,
    "reference": _reference,
}
