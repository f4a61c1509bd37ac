"""Schema additions: the token scheme, and the error answers every endpoint gives."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object


class TokenScheme(OpenApiAuthenticationExtension):
    """``Authorization: Token <key>`` (knox, through psi.api.auth)."""

    target_class = "psi.api.auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Token"
        )


_ERROR = {"$ref": "#/components/schemas/Error"}
_VALIDATION = {"type": "object", "additionalProperties": True}

_ANSWERS = {
    "400": ("Invalid input: field errors, or an invalid filter value.", _VALIDATION),
    "401": ("Not authenticated.", _ERROR),
    "403": ("Authenticated, but not allowed to do this.", _ERROR),
    "404": ("Not found, or not visible to you.", _ERROR),
}


def document_error_responses(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(
        "Error",
        {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "detail": {"type": "string"},
            },
            "required": ["detail"],
        },
    )
    for path in result.get("paths", {}).values():
        for method, operation in path.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for code, (description, schema) in _ANSWERS.items():
                if code == "400" and method == "delete":
                    continue
                responses.setdefault(
                    code,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": schema}},
                    },
                )
    return result
