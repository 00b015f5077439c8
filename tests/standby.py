"""A streaming replica (hot standby) of the embedded primary, made as an operator makes one:
``pg_basebackup -R`` through a physical slot into a directory of its own, then ``postgres`` on
a free loopback port. For tests and benches of the read replica (README "Past one machine")."""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from exchange.embedded import free_port
from tests.helpers import eventually, postgres_bin

REPO_ROOT = Path(__file__).resolve().parent.parent


def one(conninfo: str, statement: str, params: list[Any] | None = None) -> Any:
    """The first value ``statement`` answers, on a connection of its own (autocommit)."""
    conn = psycopg2.connect(f"{conninfo} dbname=postgres connect_timeout=5")
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
            row = cursor.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


def conninfo_of(settings_dict: dict[str, Any]) -> str:
    """libpq's connection string for a Django DATABASES entry (host, port and user)."""
    port = settings_dict["PORT"] or 5432
    return f"host={settings_dict['HOST']} port={port} user={settings_dict['USER']}"


@dataclass
class Standby:
    """A hot standby streaming from ``primary`` (a libpq connection string) through ``slot``."""

    primary: str
    data: Path
    port: int
    slot: str
    user: str | None  # as root, PostgreSQL runs as pgserver's user (as the primary does)

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres"

    def run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(postgres_bin() / program), *args],
            check=True, capture_output=True, timeout=120, user=self.user,
        )  # fmt: skip

    def start(self) -> None:
        # hot_standby_feedback: the primary's vacuum spares what a long read here still needs.
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.data / "standby.log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -h 127.0.0.1 -k '' -c hot_standby_feedback=on", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def sql(self, statement: str) -> Any:
        return one(self.conninfo, statement)

    def pause(self) -> None:
        """Stop replaying WAL (it keeps arriving): the standby holds still at this point."""
        self.sql("SELECT pg_wal_replay_pause()")
        eventually(
            lambda: self.sql("SELECT pg_get_wal_replay_pause_state()") == "paused",
            what="replay paused",
        )

    def resume(self) -> None:
        self.sql("SELECT pg_wal_replay_resume()")

    def processes(self) -> list[psutil.Process]:
        """The standby's postmaster and every process it started."""
        return postgres_processes(self.data)

    def drop_slot(self) -> None:
        one(
            self.primary,
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active",
            [self.slot],
        )


def postgres_processes(data: Path) -> list[psutil.Process]:
    """The postmaster of the cluster in ``data`` and every process it started."""
    postmaster = psutil.Process(int((data / "postmaster.pid").read_text().split("\n", 1)[0]))
    return [postmaster, *postmaster.children(recursive=True)]


@contextmanager
def standby_of(primary: str, name: str) -> Iterator[Standby]:
    """A running hot standby of the cluster ``primary`` (a libpq connection string) under
    var/ (outside pytest's temporary tree, as ``exchange_var``), through the slot ``name``;
    stopped, its slot dropped and its directory removed afterwards."""
    base = REPO_ROOT / "var"
    base.mkdir(exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="replica-", dir=base))
    user = "pgserver" if os.geteuid() == 0 else None
    if user is not None:
        shutil.chown(data, user, user)
    standby = Standby(primary, data, free_port(), name, user)
    standby.drop_slot()  # one a crashed run of the same name left
    try:
        standby.run(
            "pg_basebackup", "-d", primary, "-D", str(data), "-R", "-X", "stream",
            "-C", "-S", name, "-c", "fast",
        )  # fmt: skip
        standby.start()
        yield standby
    finally:
        with suppress(subprocess.CalledProcessError):  # stopped already, or never started
            standby.stop("immediate")
        standby.drop_slot()
        shutil.rmtree(data, ignore_errors=True)
