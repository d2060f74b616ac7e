"""The default SQLite instance (DAGSTER_HOME without a storage section), used by a command for the
one process it lives: the same files and tables as Dagster's own SQLite storages, reached through
one SQLAlchemy engine per database file, and its connection, kept for the command instead of a
new engine and a new connection for every statement.

Dagster 1.13's SQLite storages call `create_engine` on every connection (NullPool): about 7 ms
each on the development machine, and a run stores every event through two or three of them (the
run's own database, the index, the asset tables). An empty `pensionstraek intake` made ~210, a
national intake ~900: a second and five seconds of a command's time (issue 11, "fixed cost").
Closing a WAL database's last connection also checkpoints it (an fdatasync of the database and of
the WAL): with a connection per statement, nearly every event did so (an empty intake: 330
fdatasyncs, now 70). A kept connection is between statements what a closed one is: each use is
one transaction, committed or rolled back when it ends (SQLAlchemy's reset on return), so it holds
no lock and no read snapshot that another process waits for. What reaches the disk at a commit is
the same; SQLite checkpoints when the WAL reaches its size, and the engines are disposed of (their
connections closed, the WAL checkpointed) when the command's process exits.

Only an instance whose storages are exactly Dagster's SQLite classes is changed; PostgreSQL
(deploy/dagster.yaml) and any other storage are left as they are. The webserver and the daemon
open the same files with Dagster's own classes."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy import event

_engines_lock = threading.Lock()
# The engines alive, disposed of at exit. Weakly: an instance dropped (a test's) takes its engines
# and their open connections with it.
_live_engines: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _dispose_engines() -> None:
    for engine in list(_live_engines):
        engine.dispose()


def _engine(storage, conn_string: str, **kwargs):
    """The storage's engine for `conn_string`, made on first use."""
    with _engines_lock:
        engines = storage.__dict__.setdefault("_pensionstraek_engines", {})
        engine = engines.get(conn_string)
        if engine is None:
            # SQLAlchemy's pool for a SQLite file: the connections are kept, and are not bound to
            # the thread that made them.
            engine = engines[conn_string] = create_engine(conn_string, **kwargs)
            event.listen(engine, "connect", _wal_normal)
            _live_engines.add(engine)
        return engine


def _wal_normal(connection, _record) -> None:
    # SQLite's advice for WAL databases (Dagster makes every one WAL): commits wait for no fsync;
    # a killed process loses nothing, a power cut at most the last events (docs/decisions.md).
    connection.execute("PRAGMA synchronous=NORMAL")


class _RunStorage(SqliteRunStorage):
    @contextmanager
    def connect(self) -> Iterator:
        with _engine(self, self._conn_string).connect() as conn:
            with conn.begin():
                yield conn


class _ScheduleStorage(SqliteScheduleStorage):
    @contextmanager
    def connect(self) -> Iterator:
        with _engine(self, self._conn_string).connect() as conn:
            with conn.begin():
                yield conn


class _EventLogStorage(SqliteEventLogStorage):
    @contextmanager
    def _connect(self, shard: str) -> Iterator:
        # As SqliteEventLogStorage._connect, with the engine kept per shard.
        with self._db_lock:
            engine = _engine(
                self, self.conn_string_for_shard(shard), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def has_table(self, table_name: str) -> bool:
        # Dagster asks whether the index has a table (asset_event_tags, dynamic_partitions,
        # asset_check_executions, ...) before most statements that use one, each time through a
        # new engine: ~80 times in a national settlement. A table a migration made is not dropped
        # while a command runs, so one found is remembered; one missing is asked again.
        # Not through `index_connection`: Dagster asks while it holds that (`_db_lock`).
        found = self.__dict__.setdefault("_pensionstraek_tables", set())
        if table_name not in found:
            engine = _engine(
                self, self.conn_string_for_shard(INDEX_SHARD_NAME), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            with engine.connect() as conn:
                if engine.dialect.has_table(conn, table_name):
                    found.add(table_name)
        return table_name in found


_FASTER = {SqliteRunStorage: _RunStorage, SqliteScheduleStorage: _ScheduleStorage, SqliteEventLogStorage: _EventLogStorage}


def keep_engines(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """`instance`, its SQLite storages reached through kept engines (see the module docstring)."""
    for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
        faster = _FASTER.get(type(storage))
        if faster is not None:
            storage.__class__ = faster
    return instance


# Every SQLite storage checks its schema's alembic revision when it opens a database, and a new
# run's database is stamped too: each builds a ScriptDirectory, which reads and compiles Dagster's
# ~90 migration scripts again (five times in an empty `pensionstraek intake`, about 70 ms; issue
# 11, "fixed cost"). The scripts are the installed package's and do not change while a command
# runs, so in a process that imports this module (a command, or the tests) the directory is made
# once per script location and configuration (Dagster's three storages have identical alembic.ini
# files beside them) and then shared; what alembic reads from it is the same.
_script_directories: dict[tuple, ScriptDirectory] = {}
_script_directories_lock = threading.Lock()
_script_directory_from_config = ScriptDirectory.from_config.__func__


def _kept_script_directory(cls, config: AlembicConfig) -> ScriptDirectory:
    ini = Path(config.config_file_name).read_bytes() if config.config_file_name else b""
    key = (cls, ini, config.get_alembic_option("script_location"))
    with _script_directories_lock:
        script = _script_directories.get(key)
        if script is None:
            script = _script_directories[key] = _script_directory_from_config(cls, config)
        return script


ScriptDirectory.from_config = classmethod(_kept_script_directory)
