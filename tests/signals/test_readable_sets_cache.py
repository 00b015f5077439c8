"""The sets an organisation may read are kept in each process's memory for its signed requests
(signals/access.py, exchange/generation.py); a set created or changed, a grant given or taken
back, holds from the very next request."""

import pytest

from signals.actions.sets import do_create_set, do_grant, do_revoke_grant, do_update_set
from tests.helpers import assert_problem

pytestmark = pytest.mark.django_db


def test_a_grant_taken_back_hides_the_set_from_the_next_request(publisher, subscriber):
    hash_set = do_create_set(publisher.org, {"slug": "acme-private", "name": "Private"})
    do_update_set(hash_set, {"distribution": "granted"})
    do_grant(hash_set, subscriber.org, can_read=True, can_publish=False)
    pull = "/api/v1/changes?sets=acme-private"
    assert subscriber.api.get(pull).status_code == 200  # the readable sets are in memory
    do_revoke_grant(hash_set, subscriber.org)
    assert_problem(subscriber.api.get(pull), 404, "not-found")
    do_grant(hash_set, subscriber.org, can_read=True, can_publish=False)
    assert subscriber.api.get(pull).status_code == 200
    do_update_set(hash_set, {"distribution": "owner"})
    assert_problem(subscriber.api.get(pull), 404, "not-found")


def test_a_new_set_is_visible_on_the_next_request(publisher, subscriber):
    assert publisher.api.get("/api/v1/changes").status_code == 200  # readable sets in memory
    do_create_set(publisher.org, {"slug": "acme-new", "name": "New"})
    assert publisher.api.get("/api/v1/changes?sets=acme-new").status_code == 200
