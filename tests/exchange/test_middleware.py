"""Django's session, user and message middleware serve the pages people use and are passed by
on the paths machines reach (every signed request paid for three middleware it never used)."""

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.module_loading import import_string

from tests.helpers import assert_problem

BROWSER = ["SessionMiddleware", "AuthenticationMiddleware", "MessageMiddleware"]


def chain(request):
    """The request through the three, in MIDDLEWARE's order, as far as a view."""
    seen = {}

    def view(request):
        seen.update(
            session=hasattr(request, "session"),
            user=hasattr(request, "user"),
            messages=hasattr(request, "_messages"),
        )
        return HttpResponse("ok")

    handler = view
    for path in reversed([p for p in settings.MIDDLEWARE if p.rsplit(".", 1)[1] in BROWSER]):
        handler = import_string(path)(handler)
    handler(request)
    return seen


@pytest.mark.parametrize(
    "path", ["/api/v1/whoami", "/taxii2/", "/feeds/misp/x/manifest.json", "/healthz", "/metrics"]
)
def test_machine_paths_pass_by_sessions_users_and_messages(path):
    assert chain(RequestFactory().get(path)) == {"session": False, "user": False, "messages": False}


@pytest.mark.parametrize("path", ["/admin/", "/admin/ops/", "/"])
def test_the_pages_people_use_have_them(path):
    assert chain(RequestFactory().get(path)) == {"session": True, "user": True, "messages": True}


def test_every_one_of_them_is_in_middleware_in_djangos_order():
    names = [path.rsplit(".", 1)[1] for path in settings.MIDDLEWARE]
    assert [n for n in names if n in BROWSER] == BROWSER
    assert names.index("SessionMiddleware") < names.index("CsrfViewMiddleware")


@pytest.mark.django_db
def test_the_api_still_answers_and_the_admin_still_logs_in(publisher, admin_client):
    assert publisher.api.get("/api/v1/whoami").status_code == 200
    assert admin_client.get("/admin/").status_code == 200
    assert_problem(publisher.api.get("/api/v1/nothing-here"), 404, "not-found")
