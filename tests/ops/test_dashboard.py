"""The staff dashboard and member page (admin, SVG charts drawn from real data under a CSP),
and a member's own figures: GET /api/v1/stats and `hashx stats`."""

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from members.actions.keys import do_retire_key
from members.actions.tokens import do_create_feed_token, do_revoke_feed_token
from signals.actions.merge import do_fail_batch
from signals.actions.opinions import do_give_opinions
from signals.actions.sets import do_create_set, do_grant
from tests.cli import hashx
from tests.helpers import assert_problem
from tests.signals.conftest import merged, publish

pytestmark = pytest.mark.django_db

PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
OTHER = "0f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22f"


@pytest.fixture
def traffic(publisher, subscriber):
    """Two signals published and merged into a granted set, one retracted, one disputed."""
    hash_set = do_create_set(
        publisher.org, {"slug": "acme-csam", "name": "Acme", "distribution": "granted"}
    )
    do_grant(hash_set, subscriber.org, can_read=True, can_publish=False)
    signals = [{"type": "pdq", "value": PDQ}, {"type": "pdq", "value": OTHER}]
    merged(publish(publisher, "acme-csam", signals))
    retracted = publisher.api.post(
        "/api/v1/sets/acme-csam/retractions", {"signals": [{"type": "pdq", "value": OTHER}]}
    )
    assert retracted.status_code == 200, retracted.json()
    do_give_opinions(
        hash_set, subscriber.org, [{"type": "pdq", "value": PDQ, "category": "negative"}]
    )
    return hash_set


def bars(html: str, css_class: str = "bar") -> dict[str, float]:
    return {
        series: float(value)
        for series, value in re.findall(
            rf'<rect class="{css_class}" data-series="([^"]+)" data-value="([^"]+)"', html
        )
    }


def test_staff_see_charts_drawn_from_the_data_with_no_external_source(staff, publisher, traffic):
    stuck = publish(
        publisher, "acme-csam", [{"type": "md5", "value": "9e107d9d372bb6826bd81d3542a419d6"}]
    )
    do_fail_batch(stuck.json()["batch"], "the disk filled up")
    answer = staff.get("/admin/ops/")
    assert answer.status_code == 200
    policy = answer["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    html = answer.content.decode()
    assert html.count('<svg class="chart"') == 6
    # Today's columns: three signals published (two, then one), one batch failed.
    assert bars(html) == {"acme-video": 3.0, "failed": 1.0}
    assert "the disk filled up" in html
    segments = re.findall(r'<rect class="segment" data-series="([^"]+)" data-value="([^"]+)"', html)
    assert ("active", "1") in segments and ("tombstones", "1") in segments
    assert ("disputed", "1") in segments or ("negative", "1") in segments
    assert not re.search(r'(src|href)="(https?:)?//', html), "nothing loaded from elsewhere"
    assert 'href="/admin/ops/members/acme-video"' in html


def test_the_admin_home_links_the_dashboard(staff):
    assert 'href="/admin/ops/"' in staff.get("/admin/").content.decode()


def test_the_dashboard_is_for_staff_only(client, db):
    answer = client.get("/admin/ops/")
    assert answer.status_code == 302 and "/admin/login/" in answer["Location"]


def test_the_member_page_shows_activity_keys_expiring_tokens_and_quota_use(
    staff, publisher, traffic
):
    publisher.org.signals_per_day = 1000
    publisher.org.save()
    spare = publisher.add_key()
    do_retire_key(spare.key, timezone.now() + timedelta(days=3))
    live, _ = do_create_feed_token(publisher.org, "opencti-live", [], None)
    gone, _ = do_create_feed_token(publisher.org, "misp-gone", [], None)
    do_revoke_feed_token(gone)
    answer = staff.get("/admin/ops/members/acme-video")
    assert answer.status_code == 200 and "Content-Security-Policy" in answer
    html = answer.content.decode()
    assert bars(html) == {"acme-video": 2.0}
    assert spare.key.key_id in html
    assert "opencti-live" in html and live.hint in html and "misp-gone" not in html
    assert re.search(r"signals</th><td>\d+ of 1000 left", html)
    assert staff.get("/admin/ops/members/nobody").status_code == 404


def test_a_member_reads_its_own_figures(publisher, subscriber, traffic):
    assert_problem(publisher.api.get("/api/v1/stats", sign=False), 401, "signature-missing")
    mine = publisher.api.get("/api/v1/stats").json()
    assert mine["organisation"] == "acme-video"
    assert mine["published_per_day"][-1]["signals"] == 2
    assert len(mine["published_per_day"]) == 14
    (figures,) = mine["sets"]
    assert (figures["slug"], figures["active"], figures["tombstones"]) == ("acme-csam", 1, 1)
    assert mine["last_publish_at"] is not None
    # The subscriber owns no set and published nothing: it sees none of the publisher's figures.
    theirs = subscriber.api.get("/api/v1/stats").json()
    assert theirs["sets"] == [] and sum(d["signals"] for d in theirs["published_per_day"]) == 0


@pytest.mark.django_db(transaction=True)
def test_hashx_stats_prints_them(exchange_url, publisher, tmp_path):
    do_create_set(publisher.org, {"slug": "acme-cli", "name": "Acme"})
    key = publisher.key_file(tmp_path / "acme.pem")
    text = hashx("stats", url=exchange_url, key=key).stdout
    assert "organisation:  acme-video" in text and "set acme-cli: 0 active" in text
    data = json.loads(hashx("--json", "stats", url=exchange_url, key=key).stdout)
    assert data["organisation"] == "acme-video"
