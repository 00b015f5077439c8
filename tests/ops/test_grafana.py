"""The sample Grafana dashboard (ops/grafana/hashx.json) asks only for series the exchange
exports."""

import json
import re

from exchange import metrics
from tests.conftest import REPO_ROOT

SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def exported() -> set[str]:
    names = {metric._name for metric in metrics._ALL}
    return names | set(metrics._SCRAPE_GAUGES)


def test_every_panel_queries_a_series_the_exchange_exports(db):
    dashboard = json.loads((REPO_ROOT / "ops" / "grafana" / "hashx.json").read_text())
    asked = {
        re.sub(r"(_bucket|_count|_sum|_total)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"hashx_[a-z_]+", target["expr"])
    }
    assert asked and asked <= exported(), asked - exported()
    # Every exported series is on the dashboard.
    assert exported() <= asked, exported() - asked
