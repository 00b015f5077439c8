"""The hashx CLI publishes, reports, retracts and gives opinions, for real over HTTP with a
real worker merging."""

import json

import pytest

from hashx.store import LocalStore
from signals.models import SetEntry
from tests.cli import hashx
from tests.signals.conftest import PDQ, REWIND_ENTRY_IDS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


@pytest.fixture
def cli(exchange_url, publisher, tmp_path, celery_worker):
    key = publisher.key_file(tmp_path / "key.pem")

    def run(*args, check=True):
        return hashx(*args, url=exchange_url, key=key, check=check)

    return run


def test_publish_a_file_and_see_it_merged(cli, tmp_path):
    assert (
        "created set acme-csam" in cli("sets", "create", "acme-csam", "--name", "Acme CSAM").stdout
    )
    upload = tmp_path / "hashes.ndjson"
    lines = [json.dumps({"type": "pdq", "value": v}) for v in PDQ[:200]] + [
        '{"type": "md5", "value": "x"}'
    ]
    upload.write_text("\n".join(lines) + "\n")
    out = json.loads(cli("--json", "publish", "--set", "acme-csam", str(upload)).stdout)
    assert (out["answer"]["accepted"], out["answer"]["rejected"]) == (200, 1)
    assert (out["report"]["state"], out["report"]["new"]) == ("done", 200)
    assert SetEntry.objects.count() == 200

    text = cli("publish", "--set", "acme-csam", str(upload)).stdout
    assert "0 new, 0 updated, 200 duplicate" in text
    assert "201: md5:" in text
    listing = cli("batches", "--set", "acme-csam").stdout.splitlines()
    assert listing[0].split()[:3] == ["BATCH", "SET", "STATE"]
    assert [line.split()[1:4] for line in listing[1:]] == [
        ["acme-csam", "done", "100%"],
        ["acme-csam", "done", "100%"],
    ]
    assert listing[2].split()[0] == out["answer"]["batch"]


def test_threatexchange_format_retract_and_opinion(cli, tmp_path):
    cli("sets", "create", "acme-csam", "--name", "Acme CSAM")
    upload = tmp_path / "hashes.txt"
    upload.write_text("".join(f"pdq {v}\n" for v in PDQ[:3]))
    cli("publish", "--set", "acme-csam", str(upload))
    assert (
        "1 opinions recorded"
        in cli("opinion", "--set", "acme-csam", "--value", PDQ[0], "--category", "negative").stdout
    )
    assert (
        "retracted 1, of which 1 are now tombstones"
        in cli("retract", "--set", "acme-csam", "--value", PDQ[1]).stdout
    )
    states = dict(SetEntry.objects.values_list("value", "state"))
    assert states[PDQ[1]] == "tombstone" and states[PDQ[0]] == "active"
    assert SetEntry.objects.get(value=PDQ[0]).negative_count == 1


def test_publishing_to_a_missing_set_fails_with_the_servers_reason(cli, tmp_path):
    upload = tmp_path / "hashes.txt"
    upload.write_text(f"pdq {PDQ[0]}\n")
    result = cli("publish", "--set", "nope", str(upload), check=False)
    assert result.returncode == 1 and "404" in result.stderr


def test_publish_exits_1_when_the_batch_cannot_be_merged_and_4_when_waiting_ran_out(
    cli, tmp_path, celery_worker
):
    from django.db import connection

    cli("sets", "create", "acme-csam", "--name", "Acme CSAM")
    upload = tmp_path / "hashes.txt"
    upload.write_text(f"pdq {PDQ[0]}\n")
    cli("publish", "--set", "acme-csam", str(upload))
    upload.write_text(f"pdq {PDQ[1]}\n")
    with connection.cursor() as cursor:  # ids drawn by the merge are taken: it must fail
        cursor.execute(REWIND_ENTRY_IDS)
    result = cli("publish", "--set", "acme-csam", str(upload), check=False)
    assert result.returncode == 1, result.stderr
    assert "could not be merged" in result.stderr and "exchange's side" in result.stderr
    upload.write_text(f"pdq {PDQ[3]}\n")
    with connection.cursor() as cursor:
        cursor.execute(REWIND_ENTRY_IDS)
    scripted = cli("--json", "publish", "--set", "acme-csam", str(upload), check=False)
    assert scripted.returncode == 1
    report = json.loads(scripted.stdout)["report"]
    assert report["state"] == "failed" and report["error"]

    celery_worker.stop()  # nobody merges now
    upload.write_text(f"pdq {PDQ[2]}\n")
    result = cli("publish", "--set", "acme-csam", str(upload), "--wait-timeout", "1", check=False)
    assert result.returncode == 4, result.stderr
    assert "still queued after 1 s" in result.stderr and "hashx batch" in result.stderr


def test_sync_keeps_a_local_copy_and_applies_tombstones(cli, tmp_path):
    cli("sets", "create", "acme-csam", "--name", "Acme CSAM")
    upload = tmp_path / "hashes.txt"
    upload.write_text("".join(f"pdq {v}\n" for v in PDQ[:30]))
    cli("publish", "--set", "acme-csam", str(upload))
    out = tmp_path / "copy"
    first = cli("sync", "--sets", "acme-csam", "--out", str(out)).stdout
    assert "30 changes applied; 30 active entries of acme-csam" in first
    cli("retract", "--set", "acme-csam", "--value", PDQ[3])
    second = json.loads(cli("--json", "sync", "--out", str(out)).stdout)
    assert (second["changes"], second["entries"], second["sets"]) == (1, 29, ["acme-csam"])
    store = LocalStore(out)
    assert {v for _, _, v in store.values()} == set(PDQ[:30]) - {PDQ[3]}
    store.close()
    assert "0 changes applied" in cli("sync", "--out", str(out)).stdout
    other = cli("sync", "--sets", "other", "--out", str(out), check=False)
    assert other.returncode == 2 and "follows other sets" in other.stderr
