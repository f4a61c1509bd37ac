"""The OpenAPI schema of the core endpoints: valid, warning-free, errors documented."""

import pytest
import yaml
from django.core.management import call_command


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "core.yaml"
    # --fail-on-warn and --validate raise on any warning or invalid schema.
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--urlconf",
        "psi.api.urls",
        "--file",
        str(path),
    )
    return yaml.safe_load(path.read_text())


def test_the_core_schema_is_valid_and_lists_every_endpoint(schema):
    assert set(schema["paths"]) >= {
        "/organisations/",
        "/organisations/{id}/",
        "/organisations/{id}/history/",
        "/memberships/",
        "/memberships/{id}/",
        "/jobs/",
        "/jobs/{id}/",
        "/audit-events/",
        "/audit-events/{id}/",
        "/audit-events/verify/",
        "/auth/token/",
        "/auth/logout/",
    }


def test_lists_document_the_400_of_an_invalid_filter_and_the_401(schema):
    for path in ("/organisations/", "/memberships/", "/jobs/", "/audit-events/"):
        responses = schema["paths"][path]["get"]["responses"]
        assert {"200", "400", "401", "404"} <= set(responses), path


def test_verify_answers_202_with_the_job(schema):
    verify = schema["paths"]["/audit-events/verify/"]["post"]
    assert verify["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Job"
    }
    assert "requestBody" not in verify


def test_history_takes_no_list_filters(schema):
    parameters = schema["paths"]["/organisations/{id}/history/"]["get"]["parameters"]
    assert [p["name"] for p in parameters] == ["id"]


def test_tokens_are_the_documented_scheme(schema):
    scheme = schema["components"]["securitySchemes"]["tokenAuth"]
    assert scheme["name"] == "Authorization" and scheme["in"] == "header"
    assert schema["paths"]["/auth/token/"]["post"].get("security") in ([], [{}], None)
