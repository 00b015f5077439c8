"""Django's PostgreSQL backend, except for how a kept connection is checked before a request
uses it. Django sends ``SELECT 1`` (a round trip to the server, on every request that touches
the database); this asks the kernel instead. An idle connection has nothing to read unless the
server has closed it or is closing it: a restart, ``pg_terminate_backend`` or an idle timeout
sends a FATAL message and then the end of the stream, and a server host that went away resets
the socket. Either makes the socket readable, and the connection is replaced before the
request's first statement. What the kernel cannot see (a server frozen, or a host gone silent)
the first statement meets instead, bounded by ``HASHX_DATABASE_TIMEOUT_SECONDS``
(exchange/pgwatch.py) as ``SELECT 1`` was, and answered 503."""

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed:
            return False
        try:
            poller = select.poll()
            poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
            return not poller.poll(0)
        except (OSError, ValueError):  # the descriptor is gone
            return False
