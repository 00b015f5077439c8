"""The hashx CLI as a person uses it when things go wrong: where it finds its settings (flags,
environment, config file), and a readable message with a distinct exit code for a refusal (1),
a usage, key, config or file problem (2) and an unreachable exchange (3)."""

import json

import pytest

from tests.cli import hashx

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def key_file(tmp_path, publisher):
    return publisher.key_file(tmp_path / "keys" / "acme.pem")


def test_the_config_file_gives_url_and_key(exchange_url, key_file, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'url = "{exchange_url}"\nkey = "keys/acme.pem"\n')
    out = hashx("--json", "whoami", env={"HASHX_CONFIG": str(config)}).stdout
    assert json.loads(out)["organisation"]["slug"] == "acme-video"


def test_the_default_config_file_lives_under_xdg_config_home(exchange_url, key_file, tmp_path):
    (tmp_path / "hashx").mkdir()
    (tmp_path / "hashx" / "config.toml").write_text(f'url = "{exchange_url}"\nkey = "{key_file}"\n')
    result = hashx("whoami", env={"HASHX_CONFIG": None, "XDG_CONFIG_HOME": str(tmp_path)})
    assert "organisation: acme-video" in result.stdout


def test_flags_and_environment_come_before_the_config_file(exchange_url, key_file, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'url = "http://127.0.0.1:9"\nkey = "{key_file}"\n')
    env = {"HASHX_CONFIG": str(config), "HASHX_URL": exchange_url}
    assert "acme-video" in hashx("whoami", env=env).stdout
    refused = hashx("--retries", "0", "--url", "http://127.0.0.1:9", "whoami", env=env, check=False)
    assert refused.returncode == 3


def test_a_broken_config_file_is_named_with_the_reason(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('url = "http://x\n')
    result = hashx("whoami", env={"HASHX_CONFIG": str(config)}, check=False)
    assert result.returncode == 2
    assert f"hashx: {config} is not valid TOML" in result.stderr
    config.write_text('url = "http://x"\nkye = "a.pem"\n')
    result = hashx("whoami", env={"HASHX_CONFIG": str(config)}, check=False)
    assert (result.returncode, result.stderr.strip()) == (
        2,
        f"hashx: {config}: unknown setting kye (expected url, key)",
    )
    result = hashx("whoami", env={"HASHX_CONFIG": str(tmp_path / "none.toml")}, check=False)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_an_unreachable_exchange_exits_3_with_the_reason(key_file):
    env = {"HASHX_URL": "http://127.0.0.1:9", "HASHX_KEY": str(key_file)}
    result = hashx("--retries", "0", "sets", "list", env=env, check=False)
    assert result.returncode == 3
    assert result.stderr.startswith("hashx: cannot reach the exchange: http://127.0.0.1:9/")
    assert "Connection refused" in result.stderr and "Traceback" not in result.stderr


def test_a_file_that_is_not_a_key_exits_2(tmp_path):
    bad = tmp_path / "key.pem"
    bad.write_text("not a key\n")
    env = {"HASHX_URL": "http://127.0.0.1:9", "HASHX_KEY": str(bad)}
    result = hashx("whoami", env=env, check=False)
    assert result.returncode == 2
    assert f"hashx: {bad} is not a PEM Ed25519 private key" in result.stderr


def test_a_url_that_is_not_a_url_exits_2(key_file):
    env = {"HASHX_URL": "127.0.0.1:8000", "HASHX_KEY": str(key_file)}
    result = hashx("whoami", env=env, check=False)
    assert result.returncode == 2
    assert "127.0.0.1:8000 (from HASHX_URL) is not an http:// or https:// URL" in result.stderr


def test_a_missing_file_to_publish_or_retract_exits_2(key_file, tmp_path):
    env = {"HASHX_URL": "http://127.0.0.1:9", "HASHX_KEY": str(key_file)}
    missing = tmp_path / "hashes.ndjson"
    for args in (["publish", "--set", "s", str(missing)], ["retract", "--set", "s", "--file",
                                                            str(missing)]):  # fmt: skip
        result = hashx(*args, env=env, check=False)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"hashx: cannot use {missing}: No such file or directory"


def test_a_refusal_is_one_line_of_title_and_detail_and_json_gets_the_problem(
    exchange_url, key_file
):
    env = {"HASHX_URL": exchange_url, "HASHX_KEY": str(key_file)}
    result = hashx("sets", "create", "Not A Slug!", "--name", "x", env=env, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("hashx: the exchange refused: 400 The request is not valid: ")
    assert "slug: " in result.stderr
    scripted = hashx("sets", "create", "Not A Slug!", "--name", "x", "--json", env=env, check=False)
    problem = json.loads(scripted.stdout)
    assert problem["status"] == 400 and problem["errors"][0]["field"] == "slug"

    result = hashx("sets", "grant", "nope", "someone", env=env, check=False)
    assert result.returncode == 1 and "404" in result.stderr


def test_an_encrypted_key_exits_2_and_says_so(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    result = hashx("whoami", env={"HASHX_URL": "http://127.0.0.1:9", "HASHX_KEY": str(locked)},
                   check=False)  # fmt: skip
    assert result.returncode == 2 and "unencrypted" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_file_that_is_not_utf8_or_a_local_copy_that_is_not_sqlite_exits_2(key_file, tmp_path):
    env = {"HASHX_URL": "http://127.0.0.1:9", "HASHX_KEY": str(key_file)}
    latin = tmp_path / "hashes.txt"
    latin.write_bytes(b"pdq caf\xe9\n")
    result = hashx("retract", "--set", "s", "--file", str(latin), env=env, check=False)
    assert result.returncode == 2, result.stderr
    assert "not UTF-8 text" in result.stderr and "Traceback" not in result.stderr
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "hashx.sqlite3").write_bytes(b"this is no database" * 100)
    result = hashx("sync", "--sets", "s", "--out", str(copy), env=env, check=False)
    assert result.returncode == 2, result.stderr
    assert "cannot use the local copy" in result.stderr and "Traceback" not in result.stderr
