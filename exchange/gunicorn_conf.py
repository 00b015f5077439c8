"""How the exchange serves HTTP: the one gunicorn configuration. `make run` (exchange/run.py),
docker-compose.yml and the Dockerfile all start ``gunicorn -c python:exchange.gunicorn_conf``.

gunicorn takes this module's lower-case names as its settings; the upper-case ones are the
deadlines of the exchange's own worker (exchange/gunicorn_worker.py), which reads them here.
Every value an operator may tune comes from the environment (README, "Configuration").
"""

from exchange import embedded
from exchange.env import env_choice, env_int, env_str
from exchange.logs import logging_config

wsgi_app = "exchange.wsgi:application"
bind = [f"{env_str('HASHX_BIND', '127.0.0.1')}:{env_int('PORT', 8000, minimum=1)}"]

# Workers times threads is how many requests run at once. Connections that are still sending
# their head, or idle between requests, wait in each worker's event loop (up to
# worker_connections of them), never in a thread.
worker_class = "exchange.gunicorn_worker.ExchangeWorker"
workers = env_int("WEB_CONCURRENCY", 2, minimum=1)
# 4, not 8: with 8 threads a worker spent some 9% more CPU per request under load (the GIL
# changing hands: 75 futex calls a request), measured in bench/load.py against the client's
# own CPU per request, which sets the machine's speed of the moment (README, "Benchmarks").
threads = env_int("HASHX_WEB_THREADS", 4, minimum=1)
worker_connections = 1000
keepalive = 5
# A worker's event loop reports to the arbiter whatever its threads do (a streamed upload may
# run for minutes), so this only catches a worker that hangs as a whole.
timeout = 60
# Below the 20 s `make run` allows its children to stop.
graceful_timeout = 10
http_protocols = "h1"
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# One line per request comes from the exchange itself (exchange/observe.py, with the request id,
# organisation, key and duration), and gunicorn's own lines go through the same formatter.
accesslog = None
logger_class = "exchange.gunicorn_worker.ExchangeLogger"
logconfig_dict = logging_config(
    env_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}),
    env_choice("HASHX_LOG_FORMAT", "text", {"TEXT", "JSON"}).lower(),
)
# Per exchange, not per user (~/.gunicorn/gunicorn.ctl): two exchanges on one host would take
# each other's socket away.
control_socket = str(embedded.var_dir() / "gunicorn.ctl")

# The whole head (request line and header fields) must arrive within this many seconds of the
# connection, or of the answer before it on a kept-alive connection.
HEADER_TIMEOUT_SECONDS = env_int("HASHX_HEADER_TIMEOUT_SECONDS", 10, minimum=1)
# A body may take as long as it needs but never pause longer than this between two reads; the
# same bound holds for each write of an answer to a client that stops reading.
BODY_READ_TIMEOUT_SECONDS = env_int("HASHX_BODY_READ_TIMEOUT_SECONDS", 30, minimum=1)
# A head larger than this answers 431 (header fields are at most 8190 bytes each).
MAX_HEAD_BYTES = 64 * 1024
# A kept-alive connection serves this many requests, then is closed after its answer (nginx's
# keepalive_requests): clients come back through accept and spread over the workers again.
REQUESTS_PER_CONNECTION = env_int("HASHX_REQUESTS_PER_CONNECTION", 20, minimum=1)
