"""What the inventory's read-only steps say in a run's summary: what they read, found,
published and wrote, counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from byok.inventory.ibm import IbmAccountSnapshot
from byok.inventory.models import EvidenceRow, Finding, KeyState, Verdict
from byok.inventory.report import Change
from byok.inventory.storage_classes import Classes


def counted(n: int, what: str, many: str = "") -> str:
    """`1 key`, `3 keys` (`many`: the plural, when not `what` + s)."""
    return f"{n} {what if n == 1 else many or what + 's'}"


def scope(subscriptions: Sequence[str]) -> str:
    """The subscriptions a step read: the one's id, or how many."""
    if len(subscriptions) == 1:
        return f"/subscriptions/{subscriptions[0]}"
    return counted(len(subscriptions), "subscription")


def subscriptions_note(readable: Sequence[str], hidden: Sequence[Finding]) -> str:
    """How many subscriptions are readable, and the wanted ones that are not."""
    note = f"{len(readable)} readable"
    return note + (f"; not readable: {', '.join(f.scope for f in hidden)}" if hidden else "")


def keys_note(states: Mapping[str, KeyState]) -> str:
    """How many keys were read, and how many were not readable."""
    unreadable = sum(not s.readable for s in states.values())
    return counted(len(states), "key") + (f", {unreadable} not readable" if unreadable else "")


def classes_note(classes: Mapping[str, Classes]) -> str:
    """The StorageClasses read, over how many clusters, and the clusters not read."""
    read = [c for c in classes.values() if not isinstance(c, str)]
    note = counted(sum(len(c) for c in read), "StorageClass", "StorageClasses")
    note += f" of {counted(len(classes), 'cluster')}"
    refused = len(classes) - len(read)
    return note + (f", {refused} not read" if refused else "")


def account_note(account: IbmAccountSnapshot) -> str:
    """The account's resources read, by kind, and what was not readable."""
    parts = [
        counted(len(account.root_keys), "root key"),
        counted(len(account.cos_images), "image") + " in COS",
        counted(len(account.templates), "image template"),
        counted(len(account.vpc_images), "VPC image"),
    ]
    if account.unreadable:
        parts.append("not readable: " + ", ".join(f.resource_id for f in account.unreadable))
    return ", ".join(parts)


def evidence_note(evidence: Sequence[EvidenceRow], changes: Sequence[Change]) -> str:
    """The evidence rows by verdict, and the changes since the last run."""
    verdicts = Counter(r.verdict for r in evidence)
    by_verdict = ", ".join(f"{verdicts[v]} {v.value}" for v in Verdict if verdicts[v])
    note = counted(len(evidence), "evidence row") + (f": {by_verdict}" if by_verdict else "")
    return f"{note}; {counted(len(changes), 'change')} since the last run"
