"""Keys and organisations are kept in each process's memory for signed requests
(members/keycache.py, exchange/generation.py), and a change made anywhere holds from the very
next request: a revoked key never passes."""

import os
import subprocess
import sys

import pytest
import redis
import time_machine
from django.conf import settings
from django.utils import timezone

from exchange import generation
from exchange.kv import redis_client
from members.actions.keys import do_revoke_key
from members.actions.organisations import do_change_status
from members.models import Organisation, SigningKey
from tests.conftest import REPO_ROOT, db_url_for_subprocesses
from tests.helpers import assert_problem

WHOAMI = "/api/v1/whoami"

# Another process of the exchange (a second web worker, a shell, the admin's process) changing
# what the one running the tests has in memory.
ELSEWHERE = """
import sys, django
django.setup()
from members.actions.keys import do_revoke_key
from members.actions.organisations import do_change_status
from members.actions.organisations import do_change_status
from members.models import Organisation, SigningKey
what, name = sys.argv[1:]
if what == "revoke":
    do_revoke_key(SigningKey.objects.get(key_id=name), "stolen")
else:
    do_change_status(Organisation.objects.get(slug=name), "suspend", "unpaid dues")
"""


def elsewhere(what: str, name: str) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "exchange.settings",
        "DATABASE_URL": db_url_for_subprocesses(),
        "REDIS_URL": settings.REDIS_URL,
    }
    subprocess.run(
        [sys.executable, "-c", ELSEWHERE, what, name],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        timeout=60,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("what", "reason"), [("revoke", "key-revoked"), ("suspend", "organisation-suspended")]
)
def test_a_change_made_in_another_process_holds_from_the_next_request(publisher, what, reason):
    assert publisher.api.get(WHOAMI).status_code == 200  # the key is in this process's memory
    elsewhere(what, publisher.key.key_id if what == "revoke" else publisher.org.slug)
    assert_problem(publisher.api.get(WHOAMI), 401, reason)


@pytest.mark.django_db
def test_a_cached_key_costs_no_query_and_a_change_costs_one_reading(
    publisher, subscriber, django_assert_num_queries
):
    publisher.api.get(WHOAMI)
    with django_assert_num_queries(0):
        assert publisher.api.get(WHOAMI).status_code == 200
    do_revoke_key(subscriber.key, "another key: every process reads keys again")
    with django_assert_num_queries(1):  # this key, read again under the new generation
        assert publisher.api.get(WHOAMI).status_code == 200


@pytest.mark.django_db
def test_a_redis_that_lost_the_generation_drops_what_was_kept(publisher):
    assert publisher.api.get(WHOAMI).status_code == 200
    # A change the cache was never told about, then a Redis restarted without its data.
    SigningKey.objects.filter(pk=publisher.key.pk).update(state=SigningKey.State.REVOKED)
    redis_client().delete(generation.GENERATION)
    assert_problem(publisher.api.get(WHOAMI), 401, "key-revoked")
    assert redis_client().get(generation.GENERATION)  # a fresh generation was started


@pytest.mark.django_db
def test_a_reactivated_organisation_is_let_in_at_once(publisher):
    do_change_status(publisher.org, "suspend", "unpaid dues")
    assert_problem(publisher.api.get(WHOAMI), 401, "organisation-suspended")
    # Even unannounced (a shell): a refusal is never decided on a copy kept in memory.
    Organisation.objects.filter(pk=publisher.org.pk).update(status=Organisation.Status.ACTIVE)
    assert publisher.api.get(WHOAMI).status_code == 200


@pytest.mark.django_db
def test_with_redis_unreachable_a_revocation_is_refused_and_the_key_stays_active(
    publisher, settings, tmp_path
):
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock"
    with pytest.raises(redis.ConnectionError):
        do_revoke_key(publisher.key, "stolen")
    assert SigningKey.objects.get(pk=publisher.key.pk).state == SigningKey.State.ACTIVE


@pytest.mark.django_db
def test_what_is_kept_is_read_again_after_the_max_age_whatever_the_generation(publisher):
    assert publisher.api.get(WHOAMI).json()["organisation"]["name"] == "Acme Video"
    Organisation.objects.filter(pk=publisher.org.pk).update(name="Renamed in a shell")
    assert publisher.api.get(WHOAMI).json()["organisation"]["name"] == "Acme Video"
    later = timezone.now() + timezone.timedelta(seconds=generation.MAX_AGE_SECONDS + 1)
    with time_machine.travel(later):
        assert publisher.api.get(WHOAMI).json()["organisation"]["name"] == "Renamed in a shell"
