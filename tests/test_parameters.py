"""Every refusal of a request, pydantic's included, reads `field = value: rule`."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field, field_validator

from byok.parameters import InvalidParameters, parse_request
from byok.validation import InvalidRequest, check_name


class Disk(BaseModel):
    lun: int = Field(..., ge=0, le=63)


class Request(BaseModel):
    key_size: Literal[2048, 3072, 4096] = 2048
    vault_name: str = "kv1"
    disks: list[Disk] = Field(default_factory=list)
    note: str = ""

    @field_validator("vault_name")
    @classmethod
    def _vault(cls, value: str) -> str:
        return check_name("key_vault", "", value)


def refusal(value: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_request(Request, value)
    return info.value


def test_pydantic_errors_name_the_value() -> None:
    assert str(refusal({"key_size": 1024})) == (
        "request.key_size = 1024: Input should be 2048, 3072 or 4096"
    )
    assert str(refusal({"disks": [{"lun": 0}, {"lun": 64}]})) == (
        "request.disks[1].lun = 64: Input should be less than or equal to 63"
    )


def test_a_validators_own_refusal_keeps_its_rule() -> None:
    error = refusal({"vault_name": "-bad"})
    assert (error.field, error.value) == ("request.vault_name", "-bad")
    assert error.rule.startswith("key vault names are 3-24 letters")


def test_missing_fields_and_several_problems() -> None:
    class Needs(BaseModel):
        a: int
        b: str

    with pytest.raises(InvalidParameters) as info:
        parse_request(Needs, {"a": "x"})
    assert str(info.value) == (
        "request.a = 'x': Input should be a valid integer, unable to parse string as an "
        "integer; request.b = <missing>: Field required"
    )
    assert info.value.field == "request.a"


def test_long_values_are_cut() -> None:
    message = str(refusal({"key_size": "9" * 500}))
    assert len(message) < 220 and message.startswith("request.key_size = '999")


def test_a_valid_model_or_its_json_form_passes() -> None:
    request = Request(key_size=4096)
    assert parse_request(Request, request) is request
    assert parse_request(Request, request.model_dump(mode="json")) == request
