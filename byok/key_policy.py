"""Key Vault key rotation policies as a request states them (in days), checked against the
service's rules before any call, and compared with what a key has.

Rules (https://learn.microsoft.com/azure/key-vault/keys/how-to-configure-key-rotation,
"Key rotation policy"): the expiry of new versions is at least 28 days; a rotation at least
7 days after creation, or at least 7 days before expiry (which needs an expiry); a notice
at least 7 days before expiry (a vault's default policy is a notice 30 days before)."""

from __future__ import annotations

from typing import Annotated, Any

from azure.keyvault.keys import (
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
)
from pydantic import BaseModel, Field, model_validator

from byok.errors import InvalidRequest
from byok.outcomes import Change, changes

MIN_EXPIRY_DAYS = 28
MIN_ACTION_DAYS = 7


class RotationPolicySpec(BaseModel):
    """When Key Vault itself makes a new version of the key, and when it warns."""

    rotate_after_days: int | None = Field(
        None, description="Rotate this many days after a version is created (min 7)."
    )
    rotate_before_expiry_days: int | None = Field(
        None, description="Or rotate this many days before a version expires (min 7)."
    )
    notify_before_expiry_days: int | None = Field(
        30, description="Emit a near-expiry event this many days before expiry (min 7)."
    )
    expires_after_days: int | None = Field(
        None, description="New versions expire this many days after creation (min 28)."
    )

    @model_validator(mode="after")
    def _rules(self) -> RotationPolicySpec:
        expiry = self.expires_after_days
        if expiry is not None and expiry < MIN_EXPIRY_DAYS:
            raise InvalidRequest(
                "expires_after_days", expiry, f"must be at least {MIN_EXPIRY_DAYS} days"
            )
        if self.rotate_after_days is not None and self.rotate_before_expiry_days is not None:
            raise InvalidRequest(
                "rotate_before_expiry_days",
                self.rotate_before_expiry_days,
                "give either rotate_after_days or rotate_before_expiry_days",
            )
        for field in (
            "rotate_after_days",
            "rotate_before_expiry_days",
            "notify_before_expiry_days",
        ):
            days = getattr(self, field)
            if days is None:
                continue
            if days < MIN_ACTION_DAYS:
                raise InvalidRequest(field, days, f"must be at least {MIN_ACTION_DAYS} days")
            if field == "rotate_before_expiry_days" and expiry is None:
                raise InvalidRequest(field, days, "needs expires_after_days")
            if expiry is not None and days >= expiry:
                raise InvalidRequest(
                    field, days, f"must be shorter than expires_after_days ({expiry})"
                )
        return self

    def to_sdk(self) -> KeyRotationPolicy:
        """The policy as the Key Vault SDK sends it."""
        actions = []
        if self.rotate_after_days is not None:
            actions.append(
                KeyRotationLifetimeAction(
                    KeyRotationPolicyAction.rotate, time_after_create=f"P{self.rotate_after_days}D"
                )
            )
        if self.rotate_before_expiry_days is not None:
            actions.append(
                KeyRotationLifetimeAction(
                    KeyRotationPolicyAction.rotate,
                    time_before_expiry=f"P{self.rotate_before_expiry_days}D",
                )
            )
        if self.notify_before_expiry_days is not None:
            actions.append(
                KeyRotationLifetimeAction(
                    KeyRotationPolicyAction.notify,
                    time_before_expiry=f"P{self.notify_before_expiry_days}D",
                )
            )
        expires = f"P{self.expires_after_days}D" if self.expires_after_days else None
        return KeyRotationPolicy(lifetime_actions=actions, expires_in=expires)

    def matches(self, policy: Any) -> bool:
        """Whether a key's policy (the SDK's KeyRotationPolicy) already is this one."""
        return _shape(policy) == _shape(self.to_sdk())

    def changes_from(self, policy: Any) -> list[Change]:
        """The fields in which a key's policy differs from this one."""
        return changes(_fields(policy), _fields(self.to_sdk()))


KeyRotationPolicyField = Annotated[
    RotationPolicySpec | None,
    Field(description="Key Vault rotation policy to set on the key; empty: leave it as is."),
]


def _shape(policy: Any) -> tuple[str | None, tuple[tuple[str, str, str], ...]]:
    actions = sorted(
        (
            str(getattr(a.action, "value", a.action)).lower(),
            a.time_after_create or "",
            a.time_before_expiry or "",
        )
        for a in policy.lifetime_actions or []
    )
    return (policy.expires_in or None, tuple(actions))


def _fields(policy: Any) -> dict[str, object]:
    expires, actions = _shape(policy)
    listed = [
        f"{action} {after} after creation" if after else f"{action} {before} before expiry"
        for action, after, before in actions
    ]
    return {"expiresIn": expires, "lifetimeActions": ", ".join(listed) or None}
