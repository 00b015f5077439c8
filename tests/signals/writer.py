"""``python -m tests.signals.writer ORG SET SEED BATCHES``: publish overlapping batches of real
PDQ hashes into one set and merge them, with some retractions, as a busy member would."""

import os
import random
import subprocess
import sys
from typing import Any

import django


def main(org_slug: str, set_slug: str, seed: int, batches: int) -> None:
    django.setup()
    from members.models import Organisation
    from signals.actions.merge import do_merge_batch
    from signals.actions.publish import do_publish
    from signals.actions.retractions import do_retract
    from signals.api.uploads import json_items
    from signals.models import HashSet
    from tests.signals.conftest import PDQ as pdq

    org = Organisation.objects.get(slug=org_slug)
    hash_set = HashSet.objects.get(slug=set_slug)
    rng = random.Random(seed)
    for _ in range(batches):
        values = rng.sample(pdq[:300], rng.randint(5, 40))
        items = [
            {"type": "pdq", "value": v, "labels": [rng.choice(["a", "b", "c"])]} for v in values
        ]
        batch, _ = do_publish(hash_set, org, json_items(items), queue=False)
        do_merge_batch(str(batch.pk), chunk=rng.randint(3, 20))
        if rng.random() < 0.3:
            do_retract(hash_set, org, [{"type": "pdq", "value": v} for v in rng.sample(values, 3)])


def start_writers(members: list, hash_set: Any, batches: int) -> list[subprocess.Popen]:
    """One writer process per member given, racing; each may publish into the set, and one may
    come twice (two uploaders of one organisation)."""
    from tests.conftest import REPO_ROOT, db_url_for_subprocesses

    env = {**os.environ, "DATABASE_URL": db_url_for_subprocesses()}
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.signals.writer",
                member.org.slug,
                hash_set.slug,
                str(seed),
                str(batches),
            ],
            cwd=REPO_ROOT,
            env=env,
        )
        for seed, member in enumerate(members)
    ]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
