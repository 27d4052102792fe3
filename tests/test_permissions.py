"""Actions matched against ARM's permission entries: wildcards, notActions, several roles."""

from __future__ import annotations

from byok.permissions import DES_WRITE, ROLE_ASSIGNMENT_WRITE, VAULT_WRITE, allowed, missing

CONTRIBUTOR = {
    "actions": ["*"],
    "notActions": ["Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write"],
}
RBAC_ADMIN = {"actions": ["Microsoft.Authorization/roleAssignments/*"], "notActions": []}


def test_contributor_writes_resources_but_assigns_no_role() -> None:
    assert allowed([CONTRIBUTOR], DES_WRITE) and allowed([CONTRIBUTOR], VAULT_WRITE)
    assert missing([CONTRIBUTOR], [VAULT_WRITE, ROLE_ASSIGNMENT_WRITE]) == [ROLE_ASSIGNMENT_WRITE]


def test_another_role_grants_what_one_excludes_and_case_does_not_matter() -> None:
    assert missing([CONTRIBUTOR, RBAC_ADMIN], [ROLE_ASSIGNMENT_WRITE, DES_WRITE]) == []
    assert allowed([{"actions": ["microsoft.compute/*/write"]}], DES_WRITE)
    assert missing([], [DES_WRITE]) == [DES_WRITE]
