#!/bin/sh
# The primary's side of the read replica (compose profile "replica", README "Past one
# machine"). The official postgres image runs this once, when it first creates the data
# directory (/docker-entrypoint-initdb.d): a role that may stream the WAL, and a pg_hba.conf
# line letting it connect for replication over the compose network. Nothing without
# HASHX_REPLICATION_PASSWORD: then no role can replicate.
set -eu
if [ -z "${HASHX_REPLICATION_PASSWORD:-}" ]; then
    echo "primary-replication: HASHX_REPLICATION_PASSWORD unset, no replication role made"
    exit 0
fi
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=password="$HASHX_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
