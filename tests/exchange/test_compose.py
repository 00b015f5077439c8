"""No Docker engine runs here, so the compose file is checked by reading it: every service is
there, and every command names a settings module, gunicorn configuration, Celery app or
manage.py command that exists in this project."""

import importlib
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

from exchange import run
from tests.conftest import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["migrate", "web", "worker", "beat"]
CONFIG = "exchange.gunicorn_conf"
GUNICORN = ["gunicorn", "-c", f"python:{CONFIG}"]
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def command_of(service):
    command = SERVICES[service]["command"]
    return shlex.split(command) if isinstance(command, str) else command


def test_it_runs_postgres_16_redis_7_and_the_four_app_services():
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert SERVICES["redis"]["image"] == "redis:7"
    assert set(APP_SERVICES) <= set(SERVICES)


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_build_this_project_and_use_its_settings(service):
    spec = SERVICES[service]
    assert spec["build"] == "."
    assert (REPO_ROOT / "Dockerfile").exists()
    settings_module = spec["environment"]["DJANGO_SETTINGS_MODULE"]
    assert importlib.import_module(settings_module)
    assert spec["environment"]["DATABASE_URL"].startswith("postgres://")
    assert spec["environment"]["REDIS_URL"].startswith("redis://redis:")


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_command_refers_to_something_that_exists(service):
    argv = command_of(service)
    if argv[:2] == ["python", "manage.py"]:
        assert argv[2] in get_commands(), f"{service}: no manage.py command {argv[2]!r}"
        assert (REPO_ROOT / "manage.py").exists()
    elif argv[0] == "gunicorn":
        assert argv == GUNICORN, f"{service}: gunicorn takes its options from one module"
        module, attribute = importlib.import_module(CONFIG).wsgi_app.split(":")
        assert callable(getattr(importlib.import_module(module), attribute))
    elif argv[0] == "celery":
        app_module = argv[argv.index("-A") + 1]
        assert hasattr(importlib.import_module(app_module), "celery_app")
        assert argv[argv.index("-A") + 2] in {"worker", "beat"}
    else:
        pytest.fail(f"{service}: unrecognised command {argv}")


@pytest.mark.parametrize("service", ["postgres", "redis", "web", "worker", "beat"])
def test_long_running_services_have_healthchecks(service):
    assert SERVICES[service]["healthcheck"]["test"]


def test_every_named_volume_is_declared():
    used = {
        mount.split(":")[0]
        for spec in SERVICES.values()
        for mount in spec.get("volumes", [])
        if not mount.startswith((".", "/"))
    }
    assert used <= set(COMPOSE["volumes"])


def test_the_image_contains_every_package_the_project_installs():
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "COPY . ." in dockerfile
    packages = [
        p.name
        for p in REPO_ROOT.iterdir()
        # tests and benchmarks are packages too, but never part of a deployment
        if (p / "__init__.py").exists() and p.name not in {"tests", "bench"}
    ]
    assert packages and not set(packages) & ignored
    assert Path(REPO_ROOT / "manage.py").name not in ignored


def test_make_run_compose_and_the_image_serve_with_the_one_gunicorn_configuration():
    (cmd,) = re.findall(r"^CMD (.*)$", DOCKERFILE, re.MULTILINE)
    assert json.loads(cmd) == GUNICORN
    assert command_of("web") == GUNICORN
    (web,) = [child for child in run.children(8000) if child.name == "web"]
    # `make run` names its own port, nothing else.
    assert web.argv[1:] == ["-m", *GUNICORN, "--bind", "127.0.0.1:8000"]
