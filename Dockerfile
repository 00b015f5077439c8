# The exchange image: web, worker and beat run from it with different commands
# (see docker-compose.yml). Real Postgres and Redis come from DATABASE_URL / REDIS_URL.
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=exchange.settings \
    HASHX_VAR_DIR=/var/lib/hashx \
    HASHX_BIND=0.0.0.0 \
    STATIC_ROOT=/app/static

RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev make curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/hashx --create-home hashx

WORKDIR /app
COPY . .
RUN pip install ./client .

# Static files are collected at build time; settings need service URLs to import, so give
# placeholders that are never connected to.
RUN DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 \
    SECRET_KEY=build-only \
    python manage.py collectstatic --noinput \
    && chown -R hashx /var/lib/hashx

USER hashx
EXPOSE 8000
# Served as `make run` serves it: every option is in exchange/gunicorn_conf.py.
CMD ["gunicorn", "-c", "python:exchange.gunicorn_conf"]
