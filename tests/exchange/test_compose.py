"""No Docker engine runs here, so the compose file is checked by reading it and by running what
can run without one: every service is there, every command names a settings module, gunicorn
configuration, Celery app or manage.py command that exists in this project, the settings the
compose environment gives serve the public URL, and each healthcheck's command expands as the
engine would run it. The image and the repository keep private keys out. The profile "replica"
is checked the same way, and its two PostgreSQL scripts are run for real: they make a streaming
hot standby of a primary, as the postgres image would run them."""

import importlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands
from django.http.request import validate_host

from exchange import run
from exchange.embedded import SERVER_SETTINGS, free_port
from tests.conftest import REPO_ROOT
from tests.helpers import eventually, postgres_bin

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["migrate", "web", "worker", "beat", "web-pool", "worker-pool"]
# The profile "replica" (README "Past one machine"): only with --profile replica.
REPLICA_PROFILE = ["postgres-replica", "web-pool", "worker-pool", "lb"]
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


@pytest.mark.parametrize(
    "service", ["postgres", "redis", "web", "worker", "beat", *REPLICA_PROFILE]
)
def test_long_running_services_have_healthchecks(service):
    assert SERVICES[service]["healthcheck"]["test"]


def test_postgres_runs_with_the_embedded_clusters_server_settings():
    argv = command_of("postgres")
    for name, value in SERVER_SETTINGS.items():
        assert f"{name}={value}" in argv
        assert argv[argv.index(f"{name}={value}") - 1] == "-c"


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


def container_setting(service, given, tmp_path, expression):
    """A Python expression over the settings (``s``) as that container computes them
    (imported for real), as JSON."""
    env = {**container_environment(service, given), "HASHX_VAR_DIR": str(tmp_path)}
    env["PATH"] = os.environ["PATH"]
    script = f"import json; from django.conf import settings as s; print(json.dumps({expression}))"
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def allowed_hosts(service, given, tmp_path):
    """ALLOWED_HOSTS as the settings compute them in that container."""
    return container_setting(service, given, tmp_path, "s.ALLOWED_HOSTS")


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
    for program in ("celery", "curl", "pg_isready", "redis-cli", "wget"):
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


@pytest.mark.parametrize("service", ["worker", "worker-pool"])
def test_the_worker_healthcheck_pings_the_worker_by_its_node_name(service, shims):
    args = run_healthcheck(service, shims, hostname="c0ffee123456")
    command = command_of(service)
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


# -- the profile "replica" ----------------------------------------------------------------------

GIVEN = {"SECRET_KEY": "s" * 50, "HASHX_PUBLIC_URL": "https://hashx.example.org"}


def test_the_replica_profile_adds_its_services_and_leaves_the_default_deployment_as_it_was():
    profiled = {name for name, spec in SERVICES.items() if spec.get("profiles")}
    assert profiled == set(REPLICA_PROFILE)
    assert all(SERVICES[name]["profiles"] == ["replica"] for name in REPLICA_PROFILE)
    # Nothing the default deployment starts waits for a service of the profile.
    for name, spec in SERVICES.items():
        if name not in profiled:
            assert not set(spec.get("depends_on", {})) & profiled, name


def test_the_replica_is_a_standby_of_postgres_bootstrapped_by_the_script_in_the_repository():
    replica, primary = SERVICES["postgres-replica"], SERVICES["postgres"]
    assert replica["image"] == primary["image"] == "postgres:16"
    assert replica["environment"]["PRIMARY_HOST"] == "postgres"
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in replica["volumes"] if m.startswith(".")}
    (script,) = [part for part in replica["entrypoint"] if part.endswith(".sh")]
    assert (REPO_ROOT / mounts[script]).is_file()
    init = {m.split(":")[1]: m.split(":")[0] for m in primary["volumes"] if m.startswith(".")}
    (path,) = [t for t in init if t.startswith("/docker-entrypoint-initdb.d/")]
    assert (REPO_ROOT / init[path]).is_file()
    # Both sides use the one password the operator gives.
    assert "HASHX_REPLICATION_PASSWORD" in primary["environment"]
    assert "HASHX_REPLICATION_PASSWORD" in replica["environment"]


def test_the_web_pool_reads_the_feed_from_the_replica_and_the_rest_from_the_primary(tmp_path):
    pool = container_setting(
        "web-pool", GIVEN, tmp_path, "{a: d['HOST'] for a, d in s.DATABASES.items()}"
    )
    assert pool == {"default": "postgres", "replica": "postgres-replica"}
    assert container_setting("web", GIVEN, tmp_path, "sorted(s.DATABASES)") == ["default"]
    assert container_setting("web-pool", GIVEN, tmp_path, "s.HASHX_TRUSTED_PROXIES") == 1


@pytest.mark.parametrize("service", ["web-pool", "worker-pool"])
def test_the_pools_run_several_containers(service):
    replicas = int(interpolate(SERVICES[service]["deploy"]["replicas"], {}))
    assert replicas >= 2
    assert "ports" not in SERVICES[service], "several containers cannot publish one host port"


def test_the_load_balancer_sends_every_request_to_the_web_pool():
    lb = SERVICES["lb"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in lb["volumes"]}
    config = (REPO_ROOT / mounts["/etc/nginx/conf.d/default.conf"]).read_text()
    assert re.search(r"server web-pool:8000 resolve;", config)
    assert "proxy_pass http://hashx_web;" in config
    (port,) = re.findall(r"listen (\d+);", config)
    assert interpolate(lb["ports"][0], {}).endswith(f":{port}")
    # The pool serves where the upstream looks: the image's gunicorn on 0.0.0.0, port 8000.
    assert image_environment()["HASHX_BIND"] == "0.0.0.0"  # noqa: S104 - in its container
    assert command_of("web-pool") == GUNICORN
    assert not set(SERVICES["web-pool"]["environment"]) & {"PORT", "HASHX_BIND"}


def test_the_profiles_scripts_make_a_streaming_hot_standby_of_the_primary(exchange_var):
    """primary-replication.sh as the postgres image runs it on a new primary, then replica.sh
    on an empty data directory, as the replica's entrypoint: a hot standby streaming from the
    primary through its slot, that sees what the primary writes."""
    bin_dir, base = postgres_bin(), exchange_var
    user = "pgserver" if os.geteuid() == 0 else None
    if user is not None:
        shutil.chown(base, user, user)
    primary, replica, shim = base / "primary", base / "replica", base / "shim"
    ports = {"primary": free_port(), "replica": free_port()}
    # The image's postgres listens on the compose network; here, each on its own loopback port.
    shim.mkdir()
    (shim / "postgres").write_text(
        f'#!/bin/sh\nexec {bin_dir}/postgres -p {ports["replica"]} -k "" -h 127.0.0.1 "$@"\n'
    )
    (shim / "postgres").chmod(0o755)
    env = {
        "PATH": f"{shim}:{bin_dir}:{os.environ['PATH']}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(ports["primary"]),
        "HASHX_REPLICATION_PASSWORD": "a replication secret",
    }

    def run(*argv, check=True, **extra):
        return subprocess.run(
            argv, env={**env, **extra}, user=user, check=check, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    run("initdb", "-D", str(primary), "-U", "hashx", "--auth-local=trust", "--auth-host=trust")
    script = str(REPO_ROOT / "ops" / "compose" / "primary-replication.sh")
    options = f"-p {ports['primary']} -k '' -h 127.0.0.1"
    run("pg_ctl", "-D", str(primary), "-l", str(base / "primary.log"), "-o", options, "-w", "start")
    standby = None
    try:
        run("sh", script, PGDATA=str(primary), POSTGRES_USER="hashx", POSTGRES_DB="postgres")
        run("pg_ctl", "-D", str(primary), "reload")
        replica.mkdir(mode=0o700)
        if user is not None:
            shutil.chown(replica, user, user)
        with (base / "replica.log").open("w") as log:
            standby = subprocess.Popen(
                ["sh", str(REPO_ROOT / "ops" / "compose" / "replica.sh")],
                env={**env, "PGDATA": str(replica), "PRIMARY_HOST": "127.0.0.1"},
                user=user, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

        def on(server, sql):
            """What psql prints for ``sql`` on ``server``; not yet when it cannot."""
            argv = ["psql", "-p", str(ports[server]), "-U", "hashx", "-d", "postgres", "-Atc"]
            answer = run(*argv, sql, check=False)
            assert answer.returncode == 0, answer.stderr
            return answer.stdout.strip()

        def streaming():
            assert standby.poll() is None, (base / "replica.log").read_text()[-2000:]
            return on("replica", "SELECT status FROM pg_stat_wal_receiver") == "streaming"

        eventually(streaming, timeout=60, what="the replica to stream from the primary")
        assert on("replica", "SELECT pg_is_in_recovery()") == "t"
        assert (
            on("primary", "SELECT slot_name, active FROM pg_replication_slots") == "hashx_replica|t"
        )
        on("primary", "CREATE TABLE written_on_the_primary AS SELECT 42 AS answer")
        eventually(
            lambda: (
                on("replica", "SELECT to_regclass('written_on_the_primary') IS NOT NULL") == "t"
            ),
            what="the primary's write on the replica",
        )
    finally:
        if standby is not None:  # replica.sh execs postgres: a fast shutdown
            standby.send_signal(signal.SIGINT)
            standby.wait(60)
        run("pg_ctl", "-D", str(primary), "-m", "immediate", "-w", "stop")
