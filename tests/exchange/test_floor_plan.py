"""The floor plan (README "Architecture"): what the import contracts of ``make lint`` cannot
see. Views and serializers reach rows only through an app's ``access`` module or its actions."""

import ast

from tests.conftest import REPO_ROOT

API_MODULES = sorted(REPO_ROOT.glob("*/api/*.py"))
MANAGERS = {"objects", "_default_manager", "_base_manager"}


def model_queries(source: str) -> list[int]:
    """The lines of ``source`` that reach a model manager."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr in MANAGERS
    ]


def test_the_check_finds_a_query_written_in_a_view():
    assert model_queries("def get(self):\n    return HashSet.objects.filter(pk=1)\n") == [2]


def test_api_views_and_serializers_never_query_models_themselves():
    assert {path.parent.parent.name for path in API_MODULES} >= {"signals", "members", "audit"}
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line}"
        for path in API_MODULES
        for line in model_queries(path.read_text())
    ]
    assert offenders == [], "ask the app's access module instead"
