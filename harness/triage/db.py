"""The crash database: one SQLite file (default reports/crashes.sqlite), one row per signature and one per
occurrence.

Many processes write at once (xdist workers, fuzz jobs, stress workers' parent), so every write is one short
`BEGIN IMMEDIATE` transaction on its own connection, in WAL mode (readers never block the writer) with a
busy timeout, retried with backoff when SQLite still says the database is locked. No row is lost: a test
runs several processes inserting at once and counts them.

Status of a signature:
- "new": first seen in run `new_run` (stays new for further occurrences in that same run);
- "known": seen again in a later run, or replayed and still crashing every time;
- "flaky": a recheck reproduced it some of the time (0 < rate < 1);
- "fixed": a recheck never reproduced it. Seen again later, it is "new" again (a regression).

Writers (the campaign's ingest) open it with `CrashDB(path)`, which creates the file, its folder and the
schema. Readers (`kpool triage`) open it with `CrashDB.open(path)`, which creates nothing: a missing (or
empty) file raises MissingCrashDB. Both check first that the file is a crash database this version reads:
SQLite, with our tables, and a schema version (`PRAGMA user_version`) no newer than SCHEMA_VERSION;
otherwise CrashDBError, naming the file. The schema changes by appending (new tables, new columns), each
change with a new SCHEMA_VERSION.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from harness import atomic, output, paths
from harness.errors import KpoolError, UsageError
from harness.triage import signature as S
from harness.triage.crash import Crash, Reproducer

# In the default reports folder ($KPOOL_REPORTS, else ./reports), where the campaign writes it.
DEFAULT_PATH = paths.reports() / "crashes.sqlite"
# PRAGMA user_version of the schema below. 0 is a database written before the version existed: the same
# tables; a writer stamps it with 1.
SCHEMA_VERSION = 1
_TABLES = {"signatures", "occurrences"}
NEW, KNOWN, FLAKY, FIXED = "new", "known", "flaky", "fixed"
OPEN_STATUSES = (NEW, KNOWN, FLAKY)
# SQLite waits this long for a lock before it reports "database is locked"; a writer holds it for a
# millisecond or so, so 30 s means something is really stuck.
BUSY_TIMEOUT_MS = 30_000
# And then we retry the whole transaction this many times, with jittered backoff (10 ms doubling to 1 s).
WRITE_ATTEMPTS = 20
# A write blocked this long on another writer's lock is said (once): the busy timeout above is silent, and
# `kpool run` sat 30 s after its program's last line with nothing on the terminal. A write alone takes
# milliseconds, so one second means another process holds the lock.
WAIT_SAY_S = 1.0
# The text of one occurrence kept in the database (its tail); the producer keeps the full text in a file.
TEXT_MAX = 256 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS signatures (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    frames TEXT NOT NULL DEFAULT '[]',
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    new_run TEXT NOT NULL,
    repro_rate REAL,
    repro_runs INTEGER,
    checked_at TEXT,
    min_reproducer TEXT
);
CREATE TABLE IF NOT EXISTS occurrences (
    id INTEGER PRIMARY KEY,
    signature_id INTEGER NOT NULL REFERENCES signatures(id),
    run_id TEXT NOT NULL,
    time TEXT NOT NULL,
    source TEXT NOT NULL,
    returncode INTEGER,
    reproducer TEXT,
    text TEXT NOT NULL,
    text_path TEXT
);
CREATE INDEX IF NOT EXISTS occurrences_by_signature ON occurrences(signature_id, run_id);
"""

T = TypeVar("T")


def _columns() -> dict[str, dict[str, str]]:
    """The columns of each table of _SCHEMA: {table: {column: its declaration}}."""
    out: dict[str, dict[str, str]] = {}
    for block in _SCHEMA.split(";"):
        head, _, body = block.partition("(")
        if "CREATE TABLE" not in head:
            continue
        table = head.split()[-1]
        lines = [ln.strip().rstrip(",") for ln in body.rsplit(")", 1)[0].splitlines()]
        out[table] = {ln.split()[0]: " ".join(ln.split()[1:]) for ln in lines if ln}
    return out


COLUMNS = _columns()


def _addable(decl: str) -> bool:
    """Whether an older database without this column can have it added (ALTER TABLE ADD COLUMN): it may
    be NULL or has a default, and is no key."""
    return (
        "PRIMARY KEY" not in decl and "UNIQUE" not in decl and ("NOT NULL" not in decl or "DEFAULT" in decl)
    )


@dataclass(frozen=True)
class SignatureRow:
    id: int
    hash: str
    title: str
    kind: str
    detail: str
    frames: tuple[str, ...]
    first_seen: str
    last_seen: str
    count: int
    runs: int
    status: str
    new_run: str
    repro_rate: float | None
    repro_runs: int | None
    checked_at: str | None
    min_reproducer: Reproducer | None


@dataclass(frozen=True)
class Occurrence:
    id: int
    signature_id: int
    run_id: str
    time: str
    source: str
    returncode: int | None
    reproducer: Reproducer | None
    text: str
    text_path: str | None


@dataclass(frozen=True)
class Recorded:
    """What `record` did: the signature's id and hash, its status now, and whether it is new in this run."""

    signature_id: int
    hash: str
    status: str
    new: bool


class CrashDBError(UsageError):
    """The file given as crash database is not one this kpool can read: not SQLite, not ours, or of a newer
    schema. A usage error (exit 2): the --db argument names the wrong file."""


class ReadOnlyCrashDB(UsageError):
    """The crash database cannot be written (a read-only file system, or no permission): the commands that
    store results in it (replay, minimize, recheck) refuse it before they run anything."""


class LockedCrashDB(KpoolError):
    """Another process holds the crash database locked for longer than the reader would wait."""


class MissingCrashDB(CrashDBError):
    """A reader found no crash database at the path (or an empty file): nothing was recorded there."""


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def status_for_rate(rate: float) -> str:
    return FIXED if rate == 0 else KNOWN if rate == 1 else FLAKY


class CrashDB:
    """`CrashDB(path)` for a writer: creates the database (and its folder) if needed. `CrashDB.open(path)`
    for a reader: creates nothing. Either raises CrashDBError if the file is not a crash database."""

    def __init__(
        self,
        path: Path | str = DEFAULT_PATH,
        *,
        create: bool = True,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        write: bool = True,
    ) -> None:
        self.path = Path(path)
        self._create = create
        self._busy_ms = busy_timeout_ms
        self._mode = "rw"  # a reader's: rw, ro, immutable or snapshot (_reader_mode)
        self._file = self.path  # the file SQLite opens: a private copy of it in snapshot mode
        self._missing: dict[str, set[str]] = {}  # columns of an older schema this file lacks
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # another user's database or folder, a read-only mount: SQLite said "attempt to write a
            # readonly database", read as "not a kpool crash database", or "unable to open database file"
            folder = self.path.absolute().parent
            if not os.access(folder, os.W_OK | os.X_OK) or (
                self.path.exists() and not os.access(self.path, os.W_OK)
            ):
                raise ReadOnlyCrashDB(
                    f"{self.path}: cannot be written (a read-only file system, or no permission"
                    f" {'on it or ' if self.path.exists() else ''}on its folder)"
                )
            self._write(self._create_schema, schema=True)
            return
        if not self.path.exists():
            raise MissingCrashDB(f"no crash database at {self.path} yet: no crashes recorded")
        if not self.path.is_file():
            raise CrashDBError(f"{self.path} is not a kpool crash database (not a file)")
        self._mode = self._reader_mode(write)
        if self._mode == "snapshot":
            self._file = self._snapshot()
        with self._connect() as conn:
            try:
                found = self._check(conn)
            except sqlite3.OperationalError as exc:  # locked or busy
                raise LockedCrashDB(
                    f"crash database {self.path} is locked by another process"
                    f" (waited {self._busy_ms / 1000:g} s): {exc}"
                ) from exc
            if not found:
                raise MissingCrashDB(f"{self.path} is an empty database: no crashes recorded")

    @classmethod
    def open(
        cls, path: Path | str = DEFAULT_PATH, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, write: bool = True
    ) -> CrashDB:
        """An existing crash database, for reading; write: the caller stores results in it too (replay,
        minimize and recheck do; ReadOnlyCrashDB when it cannot be written). `busy_timeout_ms`: how long
        to wait for another process's lock (LockedCrashDB after)."""
        return cls(path, create=False, busy_timeout_ms=busy_timeout_ms, write=write)

    def _reader_mode(self, write: bool) -> str:
        """How a reader opens the file. Read-write when it can be written: SQLite then never creates it.
        Otherwise (the nightly's database on a read-only mount, or another user's): ReadOnlyCrashDB for a
        caller that writes; for one that only reads, read-only, and on a read-only file system
        'immutable' too: a WAL database opened read-only still wants its -shm file beside it, which
        nothing can create there, and nothing can change the file meanwhile either.
        But 'immutable' reads the file alone, not its -wal file, where a writer that never closed the
        database (killed, a machine that went down, a snapshot of the disk taken as it wrote) left its last
        crashes; and read-only, SQLite cannot open a WAL without its -shm file. Such a database is read
        from a private copy of the two files ('snapshot'): nothing changes them on a read-only mount, and
        on a writable one there is no writer without the -shm file."""
        folder = self.path.absolute().parent
        if os.access(self.path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK):
            return "rw"
        if write:
            raise ReadOnlyCrashDB(
                f"{self.path}: cannot be written (a read-only file system, or no permission), and this"
                " command stores its results in it: copy it to a folder you can write in, and give that"
                " copy as --db (list, show and sarif read it where it is)"
            )
        try:
            read_only_fs = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError:
            read_only_fs = False
        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        if wal.is_file() and wal.stat().st_size > 0 and (read_only_fs or not shm.exists()):
            return "snapshot"
        if read_only_fs:
            return "immutable"
        if not shm.exists() and not os.access(folder, os.W_OK | os.X_OK):
            # another user's database, its writer done (it removed its -shm file): read-only, SQLite
            # needs a -shm file it cannot make in that folder ('attempt to write a readonly database')
            return "snapshot"
        return "ro"

    def _snapshot(self) -> Path:
        """A copy of the database and its -wal file (if any) in a private temporary folder (removed with
        this object), which SQLite opens read-write: it reads the WAL's crashes into the copy."""
        folder = Path(tempfile.mkdtemp(prefix="kpool-crashdb-"))
        weakref.finalize(self, shutil.rmtree, folder, True)
        copy = folder / self.path.name
        try:
            shutil.copyfile(self.path, copy)
            if Path(f"{self.path}-wal").exists():
                shutil.copyfile(f"{self.path}-wal", f"{copy}-wal")
        except OSError as exc:
            raise KpoolError(
                f"{self.path}: cannot be read in place (read-only, with crashes in its -wal file) nor copied"
                f" to {folder}: {exc}"
            ) from exc
        return copy

    # ---- plumbing ------------------------------------------------------------------------------------

    def _check(self, conn: sqlite3.Connection) -> bool:
        """Whether the database holds our tables (False: an empty database); CrashDBError when it is not
        SQLite, holds other tables or is of a newer schema."""
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
                raise
            raise CrashDBError(f"{self.path} is not a kpool crash database ({exc})") from exc
        if version > SCHEMA_VERSION:
            raise CrashDBError(
                f"{self.path}: crash database schema version {version}, newer than this kpool reads"
                f" ({SCHEMA_VERSION}): use the kpool that wrote it, or another --db"
            )
        if not tables and version == 0:
            return False
        if not tables >= _TABLES:
            names = ", ".join(sorted(tables)) or "none"
            raise CrashDBError(f"{self.path} is not a kpool crash database (its tables: {names})")
        self._missing = {}
        for table, columns in COLUMNS.items():
            have = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
            lacking = set(columns) - have
            required = sorted(c for c in lacking if not _addable(columns[c]))
            if required:
                raise CrashDBError(
                    f"{self.path} is not a kpool crash database (table {table} lacks {', '.join(required)})"
                )
            if lacking:
                self._missing[table] = lacking
        return True

    def _create_schema(self, db: sqlite3.Connection) -> None:
        self._check(db)
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        self._add_missing(db)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _add_missing(self, db: sqlite3.Connection) -> None:
        """A database of an older schema, about to be written: the columns it lacks added (their
        declarations allow it: NULL or a default), so that the write does not fail on them."""
        for table, lacking in self._missing.items():
            have = {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})")}
            for column in sorted(lacking - have):
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {COLUMNS[table][column]}")
        self._missing = {}

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A reader opens with mode=rw (or ro): SQLite then never creates the file, even if it went away
        # meanwhile. _reader_mode says which.
        query = {"rw": "mode=rw", "ro": "mode=ro", "immutable": "mode=ro&immutable=1", "snapshot": "mode=rw"}
        target = self.path if self._create else f"{self._file.resolve().as_uri()}?{query[self._mode]}"
        try:
            conn = sqlite3.connect(
                target, timeout=self._busy_ms / 1000, isolation_level=None, uri=not self._create
            )
        except sqlite3.Error as exc:
            raise KpoolError(f"cannot open the crash database {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.row_factory = sqlite3.Row
            yield conn
        finally:
            conn.close()

    def _write(self, body: Callable[[sqlite3.Connection], T], schema: bool = False) -> T:
        """Run `body` in one BEGIN IMMEDIATE transaction, retried while the database is locked; a wait of
        more than WAIT_SAY_S for the lock (not the body's own time) is said, once."""
        line = f"waiting for the crash database {self.path}: another process is writing it"
        said = threading.Timer(WAIT_SAY_S, output.progress, [line])
        said.daemon = True
        said.start()
        try:
            return self._write_now(body, schema, locked=said.cancel)
        finally:
            said.cancel()

    def _write_now(
        self, body: Callable[[sqlite3.Connection], T], schema: bool, locked: Callable[[], None]
    ) -> T:
        delay = 0.01
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self._connect() as conn:
                    if schema:  # the schema: WAL first (it cannot change inside a transaction)
                        self._check(conn)  # but not on a file that is not ours
                        conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("BEGIN IMMEDIATE")
                    locked()
                    try:
                        self._add_missing(conn)
                        result = body(conn)
                        if conn.in_transaction:
                            conn.execute("COMMIT")
                        return result
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise KpoolError(f"crash database {self.path}: {exc}") from exc
                if attempt == WRITE_ATTEMPTS - 1:
                    raise KpoolError(f"crash database {self.path} stayed locked: {exc}") from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
            except sqlite3.DatabaseError as exc:
                if type(exc) is not sqlite3.DatabaseError:  # integrity and the like: a bug of ours
                    raise
                raise CrashDBError(f"{self.path} is not a kpool crash database ({exc})") from exc
        raise AssertionError("unreachable")

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._connect() as conn:
            try:
                return list(conn.execute(sql, args))
            except sqlite3.Error as exc:
                raise KpoolError(f"crash database {self.path}: {exc}") from exc

    # ---- writing -------------------------------------------------------------------------------------

    def record(self, crash: Crash, sig: S.Signature | None = None) -> Recorded:
        """Add one occurrence of a crash (its signature computed here unless given)."""
        return self.record_all([crash], sigs=[sig])[0]

    def record_all(
        self,
        crashes: Sequence[Crash],
        replays: Sequence[tuple[int, int] | None] = (),
        sigs: Sequence[S.Signature | None] = (),
    ) -> list[Recorded]:
        """Add one occurrence of each crash, with the (reproduced, runs) of the replay its runner made (None:
        not replayed), in one transaction: all of them or none. Two transactions per crash (each with its
        commit and its connection's close) took 26.6 s for 700 crashes with their rates, one 1.3 s."""
        given = [*sigs, *[None] * (len(crashes) - len(sigs))]
        rates = [*replays, *[None] * (len(crashes) - len(replays))]
        # computed before the transaction: the write lock is held for the writes alone
        signatures = [sig or S.of_crash(crash) for crash, sig in zip(crashes, given, strict=True)]

        def body(db: sqlite3.Connection) -> list[Recorded]:
            out = []
            for crash, sig, rate in zip(crashes, signatures, rates, strict=True):
                rec = self._record_in(db, crash, sig)
                if rate is not None and rate[1] > 0:
                    self._replay_in(db, rec.signature_id, rate[0] / rate[1], rate[1], update_status=False)
                out.append(rec)
            return out

        return self._write(body) if crashes else []

    @staticmethod
    def _record_in(db: sqlite3.Connection, crash: Crash, sig: S.Signature) -> Recorded:
        at = now_iso()
        text = crash.text[-TEXT_MAX:]
        repro = crash.reproducer.to_json() if crash.reproducer else None
        row = db.execute("SELECT id, status, new_run FROM signatures WHERE hash = ?", (sig.hash,)).fetchone()
        if row is None:
            cur = db.execute(
                "INSERT INTO signatures (hash, title, kind, detail, frames, first_seen, last_seen, count,"
                " runs, status, new_run) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?)",
                (
                    sig.hash,
                    sig.title,
                    sig.kind,
                    sig.detail,
                    json.dumps(sig.frames),
                    at,
                    at,
                    NEW,
                    crash.run_id,
                ),
            )
            sid, status, new_run = int(cur.lastrowid or 0), NEW, crash.run_id
        else:
            sid, status, new_run = int(row["id"]), str(row["status"]), str(row["new_run"])
            if status == FIXED:  # a regression: new again, in this run
                status, new_run = NEW, crash.run_id
            elif status == NEW and new_run != crash.run_id:
                status = KNOWN
        seen = db.execute(
            "SELECT 1 FROM occurrences WHERE signature_id = ? AND run_id = ? LIMIT 1", (sid, crash.run_id)
        ).fetchone()
        db.execute(
            "INSERT INTO occurrences (signature_id, run_id, time, source, returncode, reproducer, text,"
            " text_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (sid, crash.run_id, at, crash.source, crash.returncode, repro, text, crash.text_path),
        )
        db.execute(
            "UPDATE signatures SET last_seen = ?, count = count + 1, runs = runs + ?, status = ?,"
            " new_run = ? WHERE id = ?",
            (at, 0 if seen else 1, status, new_run, sid),
        )
        return Recorded(sid, sig.hash, status, status == NEW and new_run == crash.run_id)

    @staticmethod
    def _replay_in(db: sqlite3.Connection, sig_id: int, rate: float, runs: int, update_status: bool) -> str:
        row = db.execute("SELECT status FROM signatures WHERE id = ?", (sig_id,)).fetchone()
        if row is None:
            raise KpoolError(f"no signature with id {sig_id}")
        status = status_for_rate(rate) if update_status else str(row["status"])
        db.execute(
            "UPDATE signatures SET repro_rate = ?, repro_runs = ?, checked_at = ?, status = ? WHERE id = ?",
            (rate, runs, now_iso(), status, sig_id),
        )
        return status

    def set_replay(self, sig_id: int, rate: float, runs: int, update_status: bool) -> str:
        """Store a replay's reproduction rate; with update_status (recheck), also fixed/known/flaky."""
        return self._write(lambda db: self._replay_in(db, sig_id, rate, runs, update_status))

    def set_minimized(self, sig_id: int, reproducer: Reproducer) -> None:
        def body(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE signatures SET min_reproducer = ? WHERE id = ?", (reproducer.to_json(), sig_id)
            )

        self._write(body)

    # ---- reading -------------------------------------------------------------------------------------

    def signatures(self, statuses: tuple[str, ...] | None = None) -> list[SignatureRow]:
        """New ones first, then by last seen, most recent first."""
        where = f"WHERE status IN ({','.join('?' * len(statuses))})" if statuses else ""
        rows = self._read(
            f"SELECT * FROM signatures {where} ORDER BY status = 'new' DESC, last_seen DESC, id DESC",
            tuple(statuses or ()),
        )
        return [_signature(r) for r in rows]

    def get(self, ref: str | int) -> SignatureRow:
        """A signature by id, or by hash (a unique prefix of at least 4 characters will do)."""
        text = str(ref)
        # ASCII digits only ('²'.isdigit(), and int() refuses it), and an id SQLite can hold (a longer
        # one was an OverflowError); a prefix compared as it is (LIKE took '%' and '_' as wildcards)
        if text.isascii() and text.isdigit():
            n = int(text)
            rows = self._read("SELECT * FROM signatures WHERE id = ?", (n,)) if n < 1 << 63 else []
        elif len(text) >= 4:
            prefix = text.lower()
            rows = self._read("SELECT * FROM signatures WHERE substr(hash, 1, ?) = ?", (len(prefix), prefix))
        else:
            rows = []
        if len(rows) != 1:
            raise UsageError(
                f"no signature {text!r} in {self.path}" if not rows else f"{text!r} is ambiguous"
            )
        return _signature(rows[0])

    def occurrences(self, sig_id: int) -> list[Occurrence]:
        rows = self._read("SELECT * FROM occurrences WHERE signature_id = ? ORDER BY id", (sig_id,))
        return [_occurrence(r) for r in rows]

    def occurrences_by_signature(self) -> dict[int, list[Occurrence]]:
        """Every occurrence, by signature id (one query, for a report of all signatures)."""
        out: dict[int, list[Occurrence]] = {}
        for r in self._read("SELECT * FROM occurrences ORDER BY id"):
            out.setdefault(_int(r["signature_id"]), []).append(_occurrence(r))
        return out

    def count_occurrences(self) -> int:
        return int(self._read("SELECT count(*) FROM occurrences")[0][0])

    def inputs(self) -> dict[str, str]:
        """The input file of every occurrence that has one (a fuzz crash), as its path was recorded, with
        its signature's hash: what a sweep for crash inputs a killed run left unrecorded
        (harness/fuzz/orphans.py) and the campaign's triage find recorded already."""
        out: dict[str, str] = {}
        rows = self._read(
            "SELECT o.reproducer, s.hash FROM occurrences o JOIN signatures s ON s.id = o.signature_id"
            " WHERE o.reproducer IS NOT NULL"
        )
        for r in rows:
            try:
                path = atomic.loads(r[0]).get("input_path")
            except (ValueError, AttributeError):
                continue
            if path:
                out[str(path)] = str(r[1])
        return out

    def reproducer(self, sig_id: int) -> Reproducer | None:
        """The minimised reproducer if there is one, else the latest occurrence's; its paths moved beside
        this database when its reports folder has moved since (Reproducer.relocated)."""
        row = self.get(sig_id)
        if row.min_reproducer:
            return row.min_reproducer.relocated(self.path.absolute().parent)
        found = self._read(
            "SELECT reproducer FROM occurrences WHERE signature_id = ? AND reproducer IS NOT NULL"
            " ORDER BY id DESC LIMIT 1",
            (sig_id,),
        )
        if not found:
            return None
        try:
            return Reproducer.from_json(found[0][0]).relocated(self.path.absolute().parent)
        except _DAMAGED as exc:
            raise CrashDBError(
                f"{self.path}: signature {sig_id}'s reproducer is damaged ({exc!r:.120})"
            ) from None

    def source(self, sig_id: int) -> str:
        found = self._read(
            "SELECT source FROM occurrences WHERE signature_id = ? ORDER BY id DESC LIMIT 1", (sig_id,)
        )
        return str(found[0][0]) if found else ""

    def new_in_run(self, run_id: str) -> list[SignatureRow]:
        """Signatures first seen (or seen again after a fix) in this run: what makes a campaign fail."""
        rows = self._read(
            "SELECT * FROM signatures WHERE status = 'new' AND new_run = ? ORDER BY id", (run_id,)
        )
        return [_signature(r) for r in rows]


def _get(r: sqlite3.Row, column: str, default: object = None) -> Any:
    """A column of a row; `default` for a column an older database does not have."""
    return r[column] if column in r.keys() else default  # noqa: SIM118 (`in r` looks at the values)


# A row damaged by hand (`sqlite3 crashes.sqlite "UPDATE ..."`) or by a disk: one field that does not
# parse stopped every triage command and `kpool report` with a traceback, hiding every other signature.
# A field that does not parse reads as empty (no frames, a count of 0, no minimised reproducer: the
# latest occurrence's is used); a reproducer a replay needs is an error naming it.
_DAMAGED = (ValueError, TypeError, KeyError, AttributeError)


def _frames(text: object) -> tuple[str, ...]:
    try:
        frames = atomic.loads(text) if isinstance(text, str | bytes) else None
    except ValueError:
        return ()
    return tuple(f for f in frames if isinstance(f, str)) if isinstance(frames, list) else ()


def _int(value: object) -> int:
    if not isinstance(value, int | float | str):
        return 0
    try:
        return int(value)
    except _DAMAGED:
        return 0


# SQLite keeps the type it is given whatever the column declares: a BLOB in a TEXT column, text in a REAL
# or INTEGER one (session 22: a TypeError or ValueError traceback in list, show, sarif and kpool report).
# Text reads as text (a BLOB's bad bytes replaced), a number as a number, anything else as none.


def _text(value: object, default: str = "") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return default if value is None else str(value)


def _hash(value: object, sig_id: int) -> str:
    """A signature's hash, hex digits as record() writes it; a damaged one is named by the row's id: it
    names the signature's page in the report (reports/signatures/<hash>.html), and `../` in it wrote there
    outside the reports folder."""
    text = _text(value)
    return text if re.fullmatch(r"[0-9a-f]{1,128}", text) else f"damaged-{sig_id}"


def _opt_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _opt_rate(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and 0 <= value <= 1 else None


def _reproducer(text: object) -> Reproducer | None:
    """A stored reproducer; None when there is none or it does not parse."""
    if not text:
        return None
    try:
        return Reproducer.from_json(str(text))
    except _DAMAGED:
        return None


def _signature(r: sqlite3.Row) -> SignatureRow:
    return SignatureRow(
        id=int(r["id"]),
        hash=_hash(r["hash"], int(r["id"])),
        title=_text(r["title"]),
        kind=_text(r["kind"]),
        detail=_text(_get(r, "detail", "")),
        frames=_frames(_get(r, "frames", "[]")),
        first_seen=_text(r["first_seen"]),
        last_seen=_text(r["last_seen"]),
        count=_int(_get(r, "count", 0)),
        runs=_int(_get(r, "runs", 0)),
        status=_text(r["status"]),
        new_run=_text(r["new_run"]),
        repro_rate=_opt_rate(_get(r, "repro_rate")),
        repro_runs=_opt_int(_get(r, "repro_runs")),
        checked_at=_opt_text(_get(r, "checked_at")),
        min_reproducer=_reproducer(_get(r, "min_reproducer")),
    )


def _occurrence(r: sqlite3.Row) -> Occurrence:
    return Occurrence(
        id=int(r["id"]),
        signature_id=_int(r["signature_id"]),
        run_id=_text(r["run_id"]),
        time=_text(r["time"]),
        source=_text(r["source"]),
        returncode=_opt_int(_get(r, "returncode")),
        reproducer=_reproducer(_get(r, "reproducer")),
        text=_text(r["text"]),
        text_path=_opt_text(_get(r, "text_path")),
    )
