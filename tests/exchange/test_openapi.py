"""The OpenAPI document describes every view, validates, and says how requests are signed."""

from django.core.management import call_command


def test_the_openapi_schema_is_valid_and_documents_every_view_without_warnings(tmp_path):
    schema = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(schema), "--validate", "--fail-on-warn")
    text = schema.read_text()
    assert "httpMessageSignature" in text
    assert "/api/v1/sets/{slug}/signals:" in text
