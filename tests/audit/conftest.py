import pytest

from audit.actions.seal import do_seal_pending


@pytest.fixture
def sealed():
    """Seal everything pending (the worker's job), returning how many were sealed."""
    return lambda: do_seal_pending(wait=True).sealed
