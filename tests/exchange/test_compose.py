"""No Docker engine runs here, so the compose file is checked by reading it and by running what
can run without one: every service is there, every command names a settings module, gunicorn
configuration, Celery app or manage.py command that exists in this project, the settings the
compose environment gives serve the public URL, and each healthcheck's command expands as the
engine would run it. The image and the repository keep private keys out."""

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from django.http.request import validate_host

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


# -- the environment compose gives the app ------------------------------------------------------


def interpolate(value, given):
    """Compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME:?error}, and $$ for a $."""

    def one(match):
        name, op, word = match.group(1), match.group(2), match.group(3)
        if given.get(name):
            return given[name]
        if op == ":?":
            pytest.fail(f"compose refuses to start without {name}: {word}")
        return word or ""

    value = re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, str(value))
    return value.replace("$$", "$")


def image_environment():
    """The Dockerfile's ENV instruction, as NAME=value pairs."""
    (block,) = re.findall(r"^ENV (.*?)\n\n", DOCKERFILE, re.MULTILINE | re.DOTALL)
    return dict(pair.split("=", 1) for pair in shlex.split(block.replace("\\\n", " ")))


def container_environment(service, given):
    """What a process of ``service`` sees: the image's ENV, then the service's environment."""
    env = image_environment()
    env.update({k: interpolate(v, given) for k, v in SERVICES[service]["environment"].items()})
    return env


def allowed_hosts(service, given, tmp_path):
    """ALLOWED_HOSTS as the settings compute them in that container (imported for real)."""
    env = {**container_environment(service, given), "HASHX_VAR_DIR": str(tmp_path)}
    env["PATH"] = os.environ["PATH"]
    script = (
        "import json; from django.conf import settings as s; print(json.dumps(s.ALLOWED_HOSTS))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("extra", [None, "proxy.internal"])
def test_the_web_service_serves_the_host_of_its_public_url_and_of_its_healthcheck(extra, tmp_path):
    given = {"SECRET_KEY": "s" * 50, "HASHX_PUBLIC_URL": "https://hashx.example.org"}
    if extra:
        given["ALLOWED_HOSTS"] = extra
    hosts = allowed_hosts("web", given, tmp_path)
    assert validate_host("hashx.example.org", hosts), hosts
    healthcheck = " ".join(SERVICES["web"]["healthcheck"]["test"])
    assert validate_host(re.search(r"http://([^:/]+)", healthcheck).group(1), hosts), hosts
    if extra:
        assert validate_host(extra, hosts)


# -- healthchecks, run as the engine runs them --------------------------------------------------

HEALTHCHECKED = [name for name, spec in SERVICES.items() if "healthcheck" in spec]


@pytest.fixture
def shims(tmp_path):
    """Stand-ins for the programs healthchecks call: each prints the arguments it was given."""
    for program in ("celery", "curl", "pg_isready", "redis-cli"):
        shim = tmp_path / program
        shim.write_text('#!/bin/sh\nfor arg in "$@"; do echo "$arg"; done\n')
        shim.chmod(0o755)
    return tmp_path


def run_healthcheck(service, shims, hostname="c0ffee123456"):
    """The arguments the healthcheck's program receives in a container named ``hostname``: an
    exec form ("CMD") runs as it is, with no shell to expand anything; "CMD-SHELL" (or a
    string) runs in /bin/sh."""
    test = SERVICES[service]["healthcheck"]["test"]
    kind, *rest = ["CMD-SHELL", test] if isinstance(test, str) else test
    rest = [interpolate(part, {}) for part in rest]
    argv = rest if kind == "CMD" else ["/bin/sh", "-c", rest[0]]
    env = {"PATH": f"{shims}:{os.environ['PATH']}", "HOSTNAME": hostname}
    return subprocess.run(argv, env=env, capture_output=True, text=True).stdout.splitlines()


@pytest.mark.parametrize("service", HEALTHCHECKED)
def test_no_healthcheck_passes_a_variable_unexpanded(service, shims):
    assert not [arg for arg in run_healthcheck(service, shims) if "$" in arg]


def test_the_worker_healthcheck_pings_the_worker_by_its_node_name(shims):
    args = run_healthcheck("worker", shims, hostname="c0ffee123456")
    command = command_of("worker")
    node = command[command.index("--hostname") + 1] if "--hostname" in command else "celery@%h"
    assert args[args.index("--destination") + 1] == node.replace("%h", "c0ffee123456")


# -- private keys stay out of the repository and the image --------------------------------------

SECRETS = ["exchange.pem", "keys/acme.pem", "deploy/tls/server.key", ".env", "client/.env"]


def patterns(name):
    lines = (REPO_ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def git_ignores(path, rules):
    """gitignore(5), for plain patterns: one without an inner slash matches a name at any depth,
    one with a slash matches from the top."""
    parts = path.split("/")
    for rule in rules:
        bare = rule.rstrip("/")
        if "/" in bare:
            prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
            if any(fnmatch(prefix, bare.lstrip("/")) for prefix in prefixes):
                return True
        elif any(fnmatch(part, bare) for part in parts):
            return True
    return False


def docker_ignores(path, rules):
    """.dockerignore: a pattern matches from the top of the context (``**`` is any number of
    directories), and excludes everything under what it matches."""
    for rule in rules:
        regex = re.escape(rule.strip("/"))
        regex = regex.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if re.fullmatch(f"{regex}(?:/.*)?", path):
            return True
    return False


@pytest.mark.parametrize("path", SECRETS)
def test_private_keys_and_secrets_are_neither_committed_nor_built_into_the_image(path):
    assert git_ignores(path, patterns(".gitignore")), f".gitignore lets {path} be committed"
    assert docker_ignores(path, patterns(".dockerignore")), f"the image would contain {path}"


def test_the_ignore_rules_keep_the_code():
    for path in ["exchange/settings.py", "manage.py", "client/hashx/auth.py"]:
        assert not git_ignores(path, patterns(".gitignore"))
        assert not docker_ignores(path, patterns(".dockerignore"))
