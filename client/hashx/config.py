"""Where the ``hashx`` CLI finds the exchange URL and the key: flags first, then the environment
(``HASHX_URL``, ``HASHX_KEY``), then a TOML config file, ``$HASHX_CONFIG`` or else
``$XDG_CONFIG_HOME/hashx/config.toml`` (``~/.config/hashx/config.toml``)::

    url = "https://hashx.example.org"
    key = "acme.pem"    # relative to the config file's folder; ~ works too
"""

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):  # noqa: UP036 - the client supports Python 3.10
    import tomllib
else:
    import tomli as tomllib


class ConfigError(ValueError):
    """The config file cannot be used; the message says which file and why."""


@dataclass
class Settings:
    url: str | None
    key: str | None
    # Where each came from, for messages: "--url", "HASHX_URL", or the config file's path.
    url_source: str = ""
    key_source: str = ""


def config_path() -> Path:
    explicit = os.environ.get("HASHX_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "hashx" / "config.toml"


def load_config(path: Path, *, required: bool) -> dict[str, Any]:
    """The file's settings; an absent file is empty unless ``required`` (named by
    HASHX_CONFIG)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path} (HASHX_CONFIG) does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for name in ("url", "key"):
        if name in data and not isinstance(data[name], str):
            raise ConfigError(f"{path}: {name} must be a string")
    unknown = sorted(set(data) - {"url", "key"})
    if unknown:
        raise ConfigError(f"{path}: unknown setting {', '.join(unknown)} (expected url, key)")
    return data


def resolve(url_flag: str | None, key_flag: str | None) -> Settings:
    """URL and key path, each from the first place that has it."""
    settings = Settings(url_flag, key_flag, "--url", "--key")
    if not settings.url and os.environ.get("HASHX_URL"):
        settings.url, settings.url_source = os.environ["HASHX_URL"], "HASHX_URL"
    if not settings.key and os.environ.get("HASHX_KEY"):
        settings.key, settings.key_source = os.environ["HASHX_KEY"], "HASHX_KEY"
    if settings.url and settings.key:
        return settings
    path = config_path()
    data = load_config(path, required=bool(os.environ.get("HASHX_CONFIG")))
    if not settings.url and data.get("url"):
        settings.url, settings.url_source = data["url"], str(path)
    if not settings.key and data.get("key"):
        settings.key = str(path.parent / Path(data["key"]).expanduser())
        settings.key_source = str(path)
    return settings
