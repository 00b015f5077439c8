"""manage.py export_audit writes a time range as NDJSON and refuses bad times by name."""

import json

import pytest
from django.core.management import CommandError, call_command

from audit.actions import record

pytestmark = pytest.mark.django_db


def test_a_time_range_is_exported_as_ndjson(publisher, tmp_path):
    record("test.exported", actor_org=publisher.org, details={"n": 1})
    out = tmp_path / "audit.ndjson"
    call_command("export_audit", "--since", "2000-01-01T00:00:00Z", "--output", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    exported = [line for line in lines if line["action"] == "test.exported"]
    assert exported[0]["details"] == {"n": 1} and exported[0]["actor_org"] == publisher.org.pk
    call_command("export_audit", "--until", "2000-01-01T00:00:00Z", "--output", str(out))
    assert out.read_text() == ""


@pytest.mark.parametrize("since", ["last week", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00"])
def test_a_bad_time_is_refused_by_name(since):
    with pytest.raises(CommandError, match="--since"):
        call_command("export_audit", "--since", since)
