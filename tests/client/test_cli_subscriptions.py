"""``hashx subscriptions …`` as a member uses it, against a live exchange."""

import json

import pytest

from signals.actions.sets import do_create_set, do_grant
from signals.models import Subscription
from tests.cli import hashx

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cli(exchange_url, loopback_allowed, publisher, subscriber, tmp_path):
    hash_set = do_create_set(publisher.org, {"slug": "acme-csam", "name": "Acme CSAM"})
    do_grant(hash_set, subscriber.org, can_read=True, can_publish=False)
    key = subscriber.key_file(tmp_path / "globex.pem")

    def run(*args, check=True):
        return hashx(*args, url=exchange_url, key=key, check=check)

    return run


def test_a_member_subscribes_looks_pauses_resumes_redelivers_and_deletes(cli):
    added = json.loads(
        cli("--json", "subscriptions", "add", "https://127.0.0.1:9/hook", "--sets", "acme-csam",
            "--type", "pdq", "--label", "csam").stdout
    )  # fmt: skip
    sid = added["id"]
    assert (added["signal_types"], added["labels"], added["state"]) == (["pdq"], ["csam"], "active")
    listing = cli("subscriptions", "list").stdout
    assert sid in listing and "https://127.0.0.1:9/hook" in listing
    assert f"subscription {sid}: paused" in cli("subscriptions", "pause", sid).stdout
    assert f"subscription {sid}: active" in cli("subscriptions", "resume", sid).stdout
    assert f"subscription {sid}: active" in cli("subscriptions", "redeliver", sid).stdout
    deliveries = json.loads(cli("--json", "subscriptions", "deliveries", sid).stdout)
    assert deliveries["results"] == []
    assert f"subscription {sid} deleted" in cli("subscriptions", "delete", sid).stdout
    assert not Subscription.objects.exists()


def test_a_refused_url_and_an_unknown_subscription_are_readable_failures(cli, settings):
    unreadable = cli(
        "subscriptions", "add", "https://127.0.0.1/h", "--sets", "not-mine", check=False
    )
    assert unreadable.returncode == 1 and "not-mine" in unreadable.stderr
    unknown = cli("subscriptions", "pause", "no-such-id", check=False)
    assert unknown.returncode == 1 and "no-such-id" in unknown.stderr
    settings.HASHX_OUTBOUND_ALLOWED_NETWORKS = []
    refused = cli(
        "subscriptions", "add", "https://127.0.0.1/hook", "--sets", "acme-csam", check=False
    )
    assert refused.returncode == 1 and "loopback" in refused.stderr
