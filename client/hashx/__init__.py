"""Client for a Hash Exchange server: signed requests, typed calls, CLI."""

from hashx.auth import HashxAuth
from hashx.client import Client
from hashx.errors import HashxError

__all__ = ["Client", "HashxAuth", "HashxError"]
