"""The hashx CLI in a member's first hour, against a live exchange: its version, ``-`` for standard
input, ``--json`` after a command, file names in ``hash`` and ``match``, rejections by line from 1,
``sets update`` and ``sets revoke``, ``audit``, shell completion, one-line errors with their exit
codes, and what a signature for another host name is told."""

import hashlib
import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection

from audit.models import AuditEvent
from hashx.cli import EXIT_CODES, client_version, completion_script
from signals.actions.merge import do_merge_batch
from signals.actions.sets import do_create_set, do_grant
from signals.models import Batch, SetEntry, SetGrant, StagedBatch, StagedSignal
from tests.cli import HASHX, hashx
from tests.helpers import eventually
from tests.signals.conftest import PDQ

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def acme_set(publisher):
    return do_create_set(publisher.org, {"slug": "acme-csam", "name": "Acme CSAM"})


@pytest.fixture
def cli(exchange_url, publisher, acme_set, tmp_path):
    key = publisher.key_file(tmp_path / "acme.pem")

    def run(*args, check=True, stdin=None):
        return hashx(*args, url=exchange_url, key=key, check=check, stdin=stdin)

    return run


def test_version_names_the_installed_client():
    assert hashx("--version").stdout.strip() == f"hashx {client_version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", client_version())


def test_publish_reads_standard_input_and_tells_its_format_from_the_first_line(cli):
    ndjson = "".join(json.dumps({"type": "pdq", "value": v}) + "\n" for v in PDQ[:2])
    answer = json.loads(cli("publish", "--set", "acme-csam", "-", "--no-wait", "--json",
                            stdin=ndjson).stdout)["answer"]  # fmt: skip
    assert (answer["accepted"], answer["rejected"]) == (2, 0)
    csv = f"type,value\npdq,{PDQ[2]}\n"
    text = cli("publish", "--set", "acme-csam", "-", "--no-wait", stdin=csv).stdout
    assert re.match(r"standard input into acme-csam: batch \S+: 1 accepted, 0 rejected of 1", text)
    lines = f"# from a tool\npdq {PDQ[3]}\nmd5 {'a' * 31}\n"
    text = cli("publish", "--set", "acme-csam", "-", "--no-wait", stdin=lines).stdout
    assert "1 accepted, 1 rejected of 2" in text and "  3: " in text


def test_publish_sends_again_a_batch_the_exchange_lost_before_its_merge(cli, acme_set):
    ndjson = "".join(json.dumps({"type": "pdq", "value": v}) + "\n" for v in PDQ[:3])
    batches = []

    def exchange_side():
        # The first batch meets what a crash of PostgreSQL does to its UNLOGGED staging (it
        # empties it) before a worker merges it; the one sent again is merged.
        try:
            first = eventually(lambda: Batch.objects.filter(hash_set=acme_set).first())
            StagedSignal.objects.filter(batch=first).delete()
            StagedBatch.objects.filter(batch=first).delete()
            batches.append(do_merge_batch(first.pk))
            second = eventually(lambda: Batch.objects.exclude(pk=first.pk).first())
            batches.append(do_merge_batch(second.pk))
        finally:
            connection.close()

    worker = threading.Thread(target=exchange_side)
    worker.start()
    try:
        result = cli("publish", "--set", "acme-csam", "-", "--idempotency-key", "daily",
                     stdin=ndjson)  # fmt: skip
    finally:
        worker.join()
    first, second = batches
    assert "was lost before it was merged; sending it again" in result.stderr
    assert f"batch {second.pk}: 3 accepted" in result.stdout and "merged: 3 new" in result.stdout
    assert (first.state, first.idempotency_key) == ("failed", "")
    assert (second.state, second.idempotency_key) == ("done", "daily")


def test_standard_input_is_read_once_per_command(cli):
    result = cli("webhook-verify", "-", "-", "--keys", "-", check=False, stdin="{}")
    assert result.returncode == 2
    assert result.stderr == "hashx: standard input (-) can be read only once per command\n"


def test_retract_and_opinion_name_rejections_by_line_from_1_as_publish_does(cli, tmp_path):
    values = tmp_path / "values.txt"
    values.write_text(f"# retract these\n\npdq {PDQ[0]}\npdq not-hex\n")
    text = cli("retract", "--set", "acme-csam", "--file", str(values)).stdout
    assert text.splitlines()[1:] == [
        "  line 3: not in this set",
        "  line 4: pdq: expected 64 hex digits, got 7",
    ]
    data = json.loads(cli("opinion", "--set", "acme-csam", "--file", "-", "--category",
                          "negative", "--json", stdin="pdq nope\n").stdout)  # fmt: skip
    assert data["rejections"][0]["index"] == 0  # the API's own numbering stays in --json
    text = cli("opinion", "--set", "acme-csam", "--file", "-", "--category", "negative",
               stdin="\npdq nope\n").stdout  # fmt: skip
    assert "  line 2: " in text


def test_sets_update_changes_only_what_is_given_and_revoke_takes_a_grant_back(
    cli, acme_set, subscriber
):
    text = cli("sets", "update", "acme-csam", "--tlp", "green", "--description", "checked").stdout
    assert text.startswith("updated set acme-csam\n") and "tlp:" in text and "None" not in text
    acme_set.refresh_from_db()
    assert (acme_set.tlp, acme_set.description, acme_set.name) == ("green", "checked", "Acme CSAM")
    nothing = cli("sets", "update", "acme-csam", check=False)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    text = cli("sets", "update", "acme-csam", "--distribution", "federated", "--hops", "2").stdout
    assert "federation_hops:" in text
    acme_set.refresh_from_db()
    assert (acme_set.distribution, acme_set.federation_hops) == ("federated", 2)

    do_grant(acme_set, subscriber.org, can_read=True, can_publish=True)
    text = cli("sets", "revoke", "acme-csam", subscriber.org.slug).stdout
    assert text.strip() == f"{subscriber.org.slug} may no longer read or publish acme-csam"
    assert not SetGrant.objects.filter(hash_set=acme_set, organisation=subscriber.org).exists()
    again = cli("sets", "revoke", "acme-csam", subscriber.org.slug, check=False)
    assert again.returncode == 1 and again.stderr.startswith("hashx: the exchange refused: 404")


def test_audit_lists_the_organisations_own_events_newest_first(cli, publisher, outsider):
    for tlp in ("green", "amber", "red"):
        cli("sets", "update", "acme-csam", "--tlp", tlp)
    do_create_set(outsider.org, {"slug": "initech", "name": "Not acme's business"})
    events = json.loads(cli("audit", "--action", "signals.set.updated", "--json").stdout)
    assert [e["details"]["tlp"] for e in events] == ["red", "amber", "green"]
    text = cli("audit", "--limit", "2").stdout.splitlines()
    assert text[0].split() == ["TIME", "ACTION", "ACTOR", "KEY", "OBJECT", "DETAILS"]
    assert len(text) == 4 and text[-1] == "2 events (more with --limit)"
    assert "initech" not in cli("audit").stdout
    assert AuditEvent.objects.filter(action="signals.set.created").count() == 2


def test_hash_names_each_file_and_reads_standard_input(tmp_path):
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"first file")
    second.write_bytes(b"second file")
    out = hashx("hash", str(first), "-", str(second), stdin="from a pipe").stdout.splitlines()
    assert out == [
        f"# {first}",
        f"md5 {md5(b'first file')}",
        f"sha256 {hashlib.sha256(b'first file').hexdigest()}",
        "# standard input",
        f"md5 {md5(b'from a pipe')}",
        f"sha256 {hashlib.sha256(b'from a pipe').hexdigest()}",
        f"# {second}",
        f"md5 {md5(b'second file')}",
        f"sha256 {hashlib.sha256(b'second file').hexdigest()}",
    ]
    data = json.loads(hashx("hash", str(first), "--json").stdout)
    assert {d["path"] for d in data} == {str(first)}


def test_match_names_the_file_each_match_came_from(cli, tmp_path):
    known, unknown = tmp_path / "known.bin", tmp_path / "unknown.bin"
    known.write_bytes(b"shared abuse file")
    unknown.write_bytes(b"something else")
    value = md5(b"shared abuse file")
    answer = json.loads(cli("publish", "--set", "acme-csam", "-", "--no-wait", "--json",
                            stdin=f"md5 {value}\n").stdout)["answer"]  # fmt: skip
    do_merge_batch(answer["batch"])
    assert SetEntry.objects.filter(value=value).exists()
    text = cli("match", str(known), str(unknown)).stdout.splitlines()
    assert text[0].split() == ["SOURCE", "TYPE", "SET", "ENTRY", "DISTANCE", "LABELS"]
    assert text[1].split()[:3] == [str(known), "md5", "acme-csam"]
    assert text[-1].startswith("1 of 2 sources matched (4 signals")


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def complete(line: str) -> list[str]:
    """What the bash completion offers after ``line`` (the word being typed last)."""
    words = line.split(" ")
    script = completion_script("bash") + (
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        '_hashx; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_shell_completion_offers_commands_actions_and_options():
    assert "completion" in hashx("--help").stdout
    assert complete("hashx se") == ["sets"]
    assert set(complete("hashx sets ")) >= {"list", "create", "update", "grant", "revoke"}
    assert complete("hashx sets update acme-csam --t") == ["--tlp", "--types"]
    assert complete("hashx --json au") == ["audit"]
    zsh = hashx("completion", "zsh").stdout
    assert zsh.startswith("autoload -U +X bashcompinit") and "complete -o default" in zsh


class _NotAnExchange(BaseHTTPRequestHandler):
    body = b"hello"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def not_an_exchange():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotAnExchange)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_answer_that_is_not_an_exchanges_is_one_line_with_exit_70(
    not_an_exchange, publisher, tmp_path, monkeypatch
):
    key = publisher.key_file(tmp_path / "acme.pem")
    result = hashx("whoami", url=not_an_exchange, key=key, check=False)
    assert (result.returncode, result.stderr) == (
        70, "hashx: the answer is not JSON: is the URL (--url, HASHX_URL) an exchange's?\n"
    )  # fmt: skip
    monkeypatch.setattr(_NotAnExchange, "body", b"{}")
    result = hashx("whoami", url=not_an_exchange, key=key, check=False)
    assert result.returncode == 70 and result.stderr.count("\n") == 1
    assert "unexpected error (KeyError" in result.stderr and "Traceback" not in result.stderr
    assert "Traceback" in hashx("whoami", url=not_an_exchange, key=key, check=False,
                                env={"HASHX_DEBUG": "1"}).stderr  # fmt: skip
    documented = hashx("--help").stdout.replace("\n", " ")
    assert all(str(code) in documented for code in EXIT_CODES if code)


def test_signing_for_another_host_name_is_told_what_the_exchange_verified_against(
    exchange_url, publisher, tmp_path, settings
):
    """The client signs the URL it was given; the exchange verifies against its public URL."""
    key = publisher.key_file(tmp_path / "acme.pem")
    other = exchange_url.replace("localhost", "127.0.0.1")
    assert other != exchange_url
    result = hashx("whoami", url=other, key=key, check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    line = result.stderr
    assert line.startswith("hashx: the exchange refused: 401 Bad signature: ")
    assert f"GET {exchange_url}/api/v1/whoami" in line
    assert f"HASHX_PUBLIC_URL = {exchange_url}" in line
    assert f"You reached it as {other.split('//')[1]}" in line
    problem = json.loads(hashx("whoami", "--json", url=other, key=key, check=False).stdout)
    assert problem["verified_target_uri"] == f"{exchange_url}/api/v1/whoami"
    assert hashx("whoami", url=exchange_url, key=key).returncode == 0


def test_a_usage_error_is_one_line_naming_the_help():
    result = hashx("opinion", "--set", "s", "--value", "x", check=False)
    assert result.returncode == 2
    assert result.stderr == (
        "hashx opinion: the following arguments are required: --category"
        " (see hashx opinion --help)\n"
    )
    unknown = hashx("sets", "frobnicate", check=False)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert unknown.stderr.startswith("hashx sets: argument ACTION: invalid choice: 'frobnicate'")


def test_a_reader_that_stops_early_ends_hashing_quietly(tmp_path):
    files = []
    for n in range(1500):  # far more output than a pipe holds (64 KiB)
        files.append(tmp_path / f"f{n}.bin")
        files[-1].write_bytes(str(n).encode())
    hashing = subprocess.Popen(
        [HASHX, "hash", *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "HASHX_CONFIG": os.devnull},
    )  # fmt: skip
    assert hashing.stdout.readline().startswith(b"# ")
    hashing.stdout.close()  # as `| head -1` does
    assert hashing.wait(60) == 141
    assert hashing.stderr.read() == b""
