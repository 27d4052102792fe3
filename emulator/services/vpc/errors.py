"""VPC API errors in IBM's shape: {"errors": [{"code", "message", "more_info"}], "trace",
"status_code"} (https://cloud.ibm.com/apidocs/vpc/latest#error-handling); one class per code."""

from __future__ import annotations

import uuid

from emulator.http import HttpError, Response

MORE_INFO = "https://cloud.ibm.com/docs/vpc?topic=vpc-rias-error-messages"


class VpcError(HttpError):
    """A VPC API error answer."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, target: str | None = None, value: str | None = None) -> None:
        super().__init__(type(self).status, type(self).code, message)
        self.target, self.value = target, value

    def response(self) -> Response:
        error: dict[str, object] = {
            "code": self.code,
            "message": self.message,
            "more_info": MORE_INFO,
        }
        if self.target:
            target = {"name": self.target, "type": "field"}
            if self.value is not None:
                target["value"] = self.value
            error["target"] = target
        body = {"errors": [error], "trace": str(uuid.uuid4()), "status_code": self.status}
        return Response(self.status, body)


class NotAuthorized(VpcError):
    """No or an invalid IAM token."""

    status, code = 401, "not_authorized"


class NotFound(VpcError):
    """No such resource."""

    status, code = 404, "not_found"


class InvalidField(VpcError):
    """A field is missing or invalid (IBM: `bad_field`)."""

    status, code = 400, "bad_field"


class NameNotUnique(VpcError):
    """A resource of this kind already has the name: 400 `validation_unique_failed`, "Provided
    Name (…) is not unique", the name as the target's value (as IBM answers a duplicate VPC
    name; https://cloud.ibm.com/docs/vpc?topic=vpc-rias-error-messages#validation-unique-failed
    and the `ibm_is_vpc` error quoted in IBM's docs (ibm-cloud-docs, "ha-trouble"))."""

    status, code = 400, "validation_unique_failed"


class ImageNotUsable(VpcError):
    """An instance from an image that is not `available`."""

    status, code = 400, "image_not_usable"
