"""Request bodies as ARM reads them: JSON, with the leniency of its parser (Json.NET) that the
Azure CLI relies on: `az deployment group create --template-file` sends the template file's
text as it is, comments included, under an unquoted `template` key (azure-cli
resource/custom.py, JsonCTemplatePolicy). ARM accepts comments in templates
(https://learn.microsoft.com/en-us/azure/azure-resource-manager/templates/syntax#comments).

`loads` strips `//` and `/* */` comments and trailing commas, and quotes bare property names,
outside strings; then parses strict JSON."""

from __future__ import annotations

import json
import re
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z_$][\w$]*")


def _clean(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':  # a string, escapes included
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ",":
            rest = _clean_ahead(text, i + 1)
            out.append("" if rest[:1] in ("}", "]") else ",")
            i += 1
        else:
            bare = _BARE_KEY.match(text, i) if c.isalpha() or c in "_$" else None
            if bare and _clean_ahead(text, bare.end())[:1] == ":":
                out.append(json.dumps(bare.group()))
                i = bare.end()
            elif bare:
                out.append(bare.group())  # true, false, null
                i = bare.end()
            else:
                out.append(c)
                i += 1
    return "".join(out)


def _clean_ahead(text: str, i: int) -> str:
    """The next significant character from `i` on (skipping blanks and comments)."""
    n = len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            return text[i]
    return ""


def loads(body: bytes) -> Any:
    """The body parsed as ARM does; ValueError when even that fails."""
    text = body.decode("utf-8-sig")
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(_clean(text))
