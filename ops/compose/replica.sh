#!/bin/sh
# The read replica (compose profile "replica", README "Past one machine"): the standard
# streaming replica. On its first start it copies the primary with pg_basebackup -R (which
# writes standby.signal and primary_conninfo) through the physical replication slot
# hashx_replica, made then, so the primary keeps the WAL the replica has not received yet
# (up to max_slot_wal_keep_size); from then on it runs as a hot standby that serves reads.
set -eu
: "${HASHX_REPLICATION_PASSWORD:?set HASHX_REPLICATION_PASSWORD (the primary's replication role)}"
: "${PRIMARY_HOST:=postgres}"
export PGPASSWORD="$HASHX_REPLICATION_PASSWORD"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready --host "$PRIMARY_HOST" --username replicator --quiet; do sleep 1; done
    # The slot outlives a replica whose volume was removed: make it only if it is not there.
    if ! psql "host=$PRIMARY_HOST user=replicator replication=true" --no-psqlrc --tuples-only \
        --command "READ_REPLICATION_SLOT hashx_replica" | grep -q physical; then
        psql "host=$PRIMARY_HOST user=replicator replication=true" --no-psqlrc \
            --command "CREATE_REPLICATION_SLOT hashx_replica PHYSICAL RESERVE_WAL"
    fi
    rm -rf "${PGDATA:?}"/*
    pg_basebackup --host "$PRIMARY_HOST" --username replicator --pgdata "$PGDATA" \
        --write-recovery-conf --wal-method stream --checkpoint fast --slot hashx_replica
    chmod 0700 "$PGDATA"
fi
# hot_standby_feedback: the primary's vacuum spares rows a long read here still needs, so a
# snapshot or a full sync is not cancelled by a conflict with replay.
exec postgres -c hot_standby=on -c hot_standby_feedback=on
