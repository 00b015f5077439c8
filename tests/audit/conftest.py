import pytest

from audit.actions.seal import do_seal_pending
from tests.conftest import make_member


@pytest.fixture
def acme_member(db):
    return make_member("acme")


@pytest.fixture
def acme(acme_member):
    return acme_member.org


@pytest.fixture
def globex_member(db):
    return make_member("globex")


@pytest.fixture
def globex(globex_member):
    return globex_member.org


@pytest.fixture
def acme_api(acme_member):
    return acme_member.api


@pytest.fixture
def sealed():
    """Seal everything pending (the worker's job), returning how many were sealed."""
    return lambda: do_seal_pending(wait=True).sealed
