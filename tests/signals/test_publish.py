"""Publishing: every rejected item answered with its place and reason, nothing valid lost,
retries harmless, streams of any size."""

import json
from datetime import UTC, datetime

import pytest

from audit.models import AuditEvent
from signals.models import Batch, SetEntry, StagedSignal
from tests.signals.conftest import PDQ, merged, pdq, publish

pytestmark = pytest.mark.django_db


def test_a_publish_is_accepted_as_a_batch_and_merged(publisher, csam_set):
    response = publish(
        publisher,
        "acme-csam",
        [pdq(0, labels=["csam"]), pdq(1), {"type": "md5", "value": "AB" * 16}],
    )
    assert response.status_code == 202, response.content
    answer = response.json()
    assert (answer["received"], answer["accepted"], answer["rejected"]) == (3, 3, 0)
    assert response["Location"] == f"/api/v1/batches/{answer['batch']}"
    batch = merged(response)
    assert (batch.state, batch.new, batch.duplicate, batch.updated) == ("done", 3, 0, 0)
    assert SetEntry.objects.filter(hash_set=csam_set).count() == 3
    assert not StagedSignal.objects.exists()
    report = publisher.api.get(f"/api/v1/batches/{answer['batch']}").json()
    assert (report["state"], report["progress"], report["new"]) == ("done", 1.0, 3)
    assert AuditEvent.objects.filter(action="signals.published", owner_org=publisher.org).exists()


def test_rejected_items_are_listed_and_valid_ones_kept(publisher, csam_set):
    empty_file = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    items = [
        pdq(0),
        {"type": "pdq", "value": "xyz"},
        {"type": "sha256", "value": empty_file},
        {"type": "nope", "value": "1"},
        "not an object",
        pdq(1, labels=["Bad Label!"]),
        pdq(2),
    ]
    answer = publish(publisher, "acme-csam", items).json()
    assert (answer["accepted"], answer["rejected"]) == (2, 5)
    assert [r["index"] for r in answer["rejections"]] == [1, 2, 3, 4, 5]
    assert all(r["reason"] for r in answer["rejections"])
    merged_batch = do_merge(answer)
    assert merged_batch.new == 2


def test_an_expiry_in_any_offset_is_kept_in_utc_and_one_utc_cannot_hold_is_rejected(
    publisher, csam_set
):
    """Python reads offsets up to ±23:59, Postgres only ±15:59: the time is stored in UTC."""
    items = [
        pdq(0, expires_at="2099-01-01T00:00:00+18:10"),
        pdq(1, expires_at="9999-12-31T23:59:59-01:00"),
    ]
    answer = publish(publisher, "acme-csam", items).json()
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    assert answer["rejections"][0]["index"] == 1
    assert "expires_at" in answer["rejections"][0]["reason"]
    do_merge(answer)
    entry = SetEntry.objects.get(hash_set=csam_set)
    assert entry.expires_at == datetime(2098, 12, 31, 5, 50, tzinfo=UTC)


def do_merge(answer):
    from signals.actions.merge import do_merge_batch

    return do_merge_batch(answer["batch"])


def test_atomic_refuses_everything_when_one_item_is_bad(publisher, csam_set):
    response = publish(
        publisher, "acme-csam", [pdq(0), {"type": "pdq", "value": "00"}], atomic=True
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "signals.1"
    assert not Batch.objects.exists() and not StagedSignal.objects.exists()


def test_a_retry_with_the_same_idempotency_key_changes_nothing(publisher, csam_set):
    headers = {"Idempotency-Key": "upload-2026-11-28-1"}
    first = publisher.api.post(
        "/api/v1/sets/acme-csam/signals", {"signals": [pdq(0)]}, headers=headers
    )
    again = publisher.api.post(
        "/api/v1/sets/acme-csam/signals", {"signals": [pdq(0)]}, headers=headers
    )
    assert again.status_code == 202 and again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Batch.objects.count() == 1 and StagedSignal.objects.count() == 1


def test_a_set_limits_its_types(publisher):
    publisher.api.post("/api/v1/sets", {"slug": "md5-only", "name": "MD5", "signal_types": ["md5"]})
    answer = publish(publisher, "md5-only", [pdq(0), {"type": "md5", "value": "ab" * 16}]).json()
    assert answer["accepted"] == 1
    assert "does not take 'pdq'" in answer["rejections"][0]["reason"]


def test_a_read_only_grant_may_not_publish(publisher, subscriber, csam_set):
    from signals.actions.sets import do_grant

    do_grant(csam_set, subscriber.org, can_read=True, can_publish=False)
    response = publish(subscriber, "acme-csam", [pdq(0)])
    assert response.status_code == 403
    assert not Batch.objects.exists()


def test_an_outsider_gets_404_and_unsigned_401(api, outsider, csam_set):
    assert publish(outsider, "acme-csam", [pdq(0)]).status_code == 404
    assert (
        api.post("/api/v1/sets/acme-csam/signals", {"signals": []}, format="json").status_code
        == 401
    )


def test_too_many_json_items_are_refused(publisher, csam_set):
    response = publish(publisher, "acme-csam", [pdq(0)] * 10_001)
    assert response.status_code == 413


def test_a_malformed_body_is_a_problem(publisher, csam_set):
    response = publisher.api.post("/api/v1/sets/acme-csam/signals", body=b'{"signals": [')
    assert response.status_code == 400
    response = publisher.api.post("/api/v1/sets/acme-csam/signals", {"signals": "pdq"})
    assert response.status_code == 400


def stream(member, slug, body, content_type, query=""):
    path = f"/api/v1/sets/{slug}/signals{query}"
    headers = member.api.signed_headers("POST", path, body)
    return member.api.client.generic(
        "POST", path, data=body, content_type=content_type, headers=headers
    )


def test_an_ndjson_stream_is_staged_line_by_line(publisher, csam_set):
    lines = [json.dumps(pdq(n)) for n in range(100)] + [
        "{not json",
        json.dumps({"type": "md5", "value": "zz"}),
    ]
    body = ("\n".join(lines) + "\n").encode()
    answer = stream(publisher, "acme-csam", body, "application/x-ndjson").json()
    assert (answer["received"], answer["accepted"], answer["rejected"]) == (102, 100, 2)
    assert [r["line"] for r in answer["rejections"]] == [101, 102]
    assert do_merge(answer).new == 100


def test_ndjson_lines_are_numbered_as_sent_whatever_their_shape(publisher, csam_set):
    """Blank lines and comments are skipped but counted; CRLF endings and padding are fine;
    bad UTF-8, a short hash and a type the set does not take are rejected by their line."""
    md5_only = {"slug": "md5-only", "name": "MD5", "signal_types": ["md5"]}
    publisher.api.post("/api/v1/sets", md5_only)
    lines = [
        b"# acme export",
        b"",
        json.dumps(pdq(0)).encode() + b"\r",
        b'  {"value": "' + PDQ[1].upper().encode() + b'", "type": "pdq"}  ',
        b'{"type": "pdq", "value": "' + b"\xff" * 64 + b'"}',
        b'{"type": "pdq", "value": "abc"}',
        json.dumps(pdq(2, labels=["csam"])).encode(),
    ]
    answer = stream(publisher, "acme-csam", b"\n".join(lines), "application/x-ndjson").json()
    assert (answer["received"], answer["accepted"]) == (5, 3)
    assert answer["rejections"] == [
        {"line": 5, "reason": "not valid UTF-8"},
        {"line": 6, "reason": "pdq: expected 64 hex digits, got 3"},
    ]
    merged = do_merge(answer)
    assert merged.new == 3
    assert SetEntry.objects.get(value=PDQ[1]).value == PDQ[1].lower()
    assert SetEntry.objects.get(value=PDQ[2]).labels == ["csam"]
    body = json.dumps({"type": "pdq", "value": PDQ[3]}).encode()
    answer = stream(publisher, "md5-only", body, "application/x-ndjson").json()
    assert answer["rejections"] == [
        {"line": 1, "reason": "set md5-only does not take 'pdq' (it takes md5)"}
    ]


def test_a_csv_upload_with_labels_and_quality(publisher, csam_set):
    body = (
        "type,value,labels,quality\n"
        + "\n".join(f"pdq,{PDQ[n]},csam|priority,90" for n in range(5))
        + "\npdq,abc,,\n"
    )
    answer = stream(publisher, "acme-csam", body.encode(), "text/csv").json()
    assert (answer["accepted"], answer["rejected"]) == (5, 1)
    assert answer["rejections"][0]["line"] == 7
    do_merge(answer)
    entry = SetEntry.objects.get(hash_set=csam_set, value=PDQ[0])
    assert (entry.labels, entry.quality) == (["csam", "priority"], 90)


def test_threatexchange_plain_format(publisher, csam_set):
    body = "\n".join(f"pdq {PDQ[n]}" for n in range(3)).encode()
    answer = stream(publisher, "acme-csam", body, "text/plain").json()
    assert answer["accepted"] == 3


def test_a_stream_whose_body_does_not_match_its_digest_stages_nothing(publisher, csam_set):
    body = json.dumps(pdq(0)).encode()
    path = "/api/v1/sets/acme-csam/signals"
    headers = publisher.api.signed_headers("POST", path, body)
    tampered = json.dumps(pdq(1)).encode()
    response = publisher.api.client.generic(
        "POST", path, data=tampered, content_type="application/x-ndjson", headers=headers
    )
    assert response.status_code == 401
    assert response.json()["type"].endswith("/digest-mismatch")
    assert not Batch.objects.exists() and not StagedSignal.objects.exists()


def test_an_atomic_stream_with_a_bad_line_stages_nothing(publisher, csam_set):
    body = (json.dumps(pdq(0)) + "\n" + json.dumps({"type": "pdq", "value": "1"}) + "\n").encode()
    response = stream(publisher, "acme-csam", body, "application/x-ndjson", query="?atomic=true")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "line 2"
    assert not StagedSignal.objects.exists()


def test_a_batch_is_visible_to_its_publisher_only(publisher, outsider, csam_set):
    answer = publish(publisher, "acme-csam", [pdq(0)]).json()
    assert outsider.api.get(f"/api/v1/batches/{answer['batch']}").status_code == 404
    assert publisher.api.get("/api/v1/batches/not-a-uuid").status_code == 404


def test_a_runaway_line_is_one_rejected_line_not_a_memory_hog(publisher, csam_set):
    lines = [
        json.dumps(pdq(0)),
        '{"type": "pdq", "value": "' + "a" * 200_000 + '"}',
        json.dumps(pdq(1)),
        "{oops",
    ]
    answer = stream(
        publisher, "acme-csam", ("\n".join(lines) + "\n").encode(), "application/x-ndjson"
    ).json()
    assert answer["accepted"] == 2
    assert answer["rejections"] == [
        {"line": 2, "reason": "line longer than 64 KiB"},
        {"line": 4, "reason": "not valid JSON"},
    ]


def test_a_broken_csv_row_is_one_rejected_line_and_the_rest_is_kept(publisher, csam_set):
    body = f"type,value\npdq,{PDQ[0]}\npdq,ab\rcd\npdq,{PDQ[1]}\n"
    answer = stream(publisher, "acme-csam", body.encode(), "text/csv")
    assert answer.status_code == 202, answer.json()
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert "not a CSV row" in body["rejections"][0]["reason"]


def test_a_broken_csv_header_is_a_problem_not_a_crash(publisher, csam_set):
    answer = stream(publisher, "acme-csam", f"ty\rpe,value\npdq,{PDQ[0]}\n".encode(), "text/csv")
    assert answer.status_code == 400
    assert "header row" in answer.json()["detail"]


def test_a_label_spelled_null_stays_a_label(publisher, csam_set):
    do_merge(publish(publisher, "acme-csam", [pdq(0, labels=["null", "csam"])]).json())
    assert SetEntry.objects.get(value=PDQ[0]).labels == ["csam", "null"]


def test_a_value_with_a_nul_byte_is_a_rejected_item(publisher, csam_set):
    answer = publish(publisher, "acme-csam", [{"type": "raw_text", "value": "a\x00b"}, pdq(0)])
    assert answer.status_code == 202, answer.content
    assert (answer.json()["accepted"], answer.json()["rejected"]) == (1, 1)
