import pytest

from audit.actions.seal import do_seal_pending
from members.models import Organisation
from members.principal import MemberPrincipal


@pytest.fixture
def acme(db):
    return Organisation.objects.create(slug="acme", name="Acme Video", status="active")


@pytest.fixture
def globex(db):
    return Organisation.objects.create(slug="globex", name="Globex Social", status="active")


@pytest.fixture
def acme_api(api, acme):
    api.force_authenticate(user=MemberPrincipal(acme))
    return api


@pytest.fixture
def sealed():
    """Seal everything pending (the worker's job), returning how many were sealed."""
    return lambda: do_seal_pending(wait=True).sealed
