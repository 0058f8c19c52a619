"""An on-disk cache of model answers: one SQLite file, so that a re-run cell or batch makes no model calls.

A call is cached only when it succeeded and has a seed (a call with ``seed=None`` asks for a new sample each
time). The key is a SHA-256 of everything that determines the answer: what answers the call (the server's URL,
or for the embedded server the GGUF file behind the model: see :meth:`moa_lab.Backend.scope`), the model, the
messages, temperature, max_tokens and seed. The API key is never part of the key or the stored row. A stream is
stored as its text and replayed as a stream.

Where: ``MOA_LAB_CACHE`` (a file path, or ``off``), else ``<user cache dir>/moa_lab/responses.sqlite``.
A file that is not a readable cache (truncated, garbage) is moved aside and rebuilt, with a warning. Any other
error (a full disk, an I/O error, a lock, a read-only file), when opening or while a run is going, turns the
cache off for that process with a warning, leaves the file alone, and never fails the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import platformdirs

OFF = ("", "0", "off", "false", "no", "none")
_SCHEMA = """CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, text TEXT NOT NULL,
    prompt_tokens INTEGER, completion_tokens INTEGER, created REAL NOT NULL)"""


class CacheWarning(UserWarning):
    """The cache file was unusable and was rebuilt, or the cache was turned off after an error."""


@dataclass(frozen=True)
class Hit:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None


def default_path() -> Path | None:
    """The cache file ``MOA_LAB_CACHE`` names (None when it says ``off``), else the user cache dir's."""
    value = os.environ.get("MOA_LAB_CACHE")
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value).expanduser()
    return Path(platformdirs.user_cache_dir("moa_lab")) / "responses.sqlite"


def cache_key(scope: str, model: str, messages, temperature: float, max_tokens: int | None, seed: int | None) -> str:
    """SHA-256 of what determines an answer (``scope``: the server the call goes to; never a key)."""
    payload = {
        "scope": scope,
        "model": model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "seed": seed,
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


#: What SQLite says of a file that is not a readable database (corrupt or not one at all); any other error
#: (disk full, I/O error, locked, read-only, a missing folder) says nothing about the file's content.
_CORRUPT_NAMES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_CORRUPT_TEXT = ("file is not a database", "database disk image is malformed", "integrity check failed")


def _corrupt(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return isinstance(exc, sqlite3.DatabaseError) and (
        name.startswith(_CORRUPT_NAMES) or any(text in str(exc) for text in _CORRUPT_TEXT)
    )


class ResponseCache:
    """The answers cache in one SQLite file (WAL mode: several processes may share it).

    ``get``/``put`` cost one small query each (well under a millisecond); ``hits``, ``misses`` and ``stores``
    count them for this process. Opening never fails a run: a file that is not a readable database is moved
    aside and a new one started; any other error (a full disk, an I/O error, a lock held too long, a read-only
    file or folder) leaves the file alone and turns the cache off for this process; both with a
    :class:`CacheWarning`. ``enabled`` says whether it is on.
    """

    #: Seconds to wait for another process's lock (SQLite's busy timeout).
    busy_timeout = 10.0

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.hits = self.misses = self.stores = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._open()
        except (sqlite3.Error, OSError) as exc:
            if not _corrupt(exc):
                self._off("could not be opened", exc)
                return
            try:
                aside = self._set_aside()
                self._db = self._open()
            except (sqlite3.Error, OSError) as again:
                self._off("was unreadable and could not be replaced", again)
                return
            warnings.warn(
                f"the cache file {str(self.path)!r} was unreadable ({exc}); moved it to {str(aside)!r} "
                "and started an empty cache",
                CacheWarning,
                stacklevel=2,
            )

    def _set_aside(self) -> Path:
        """Move the damaged file aside; return where it went. (Its stale -wal and -shm files, if any, SQLite
        removed when the failed connection closed: the new file never reads them.)"""
        # A name of its own (time, process, random): two processes that set a damaged file aside in the same
        # second never put one over the other.
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(self.path, aside)
        return aside

    def _off(self, what: str, exc: BaseException) -> None:
        warnings.warn(
            f"the cache {str(self.path)!r} {what} ({type(exc).__name__}: {exc}); it is off for this "
            "process, and answers are not cached (the file was left as it is)",
            CacheWarning,
            stacklevel=3,
        )

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute("SELECT key, model, text, prompt_tokens, completion_tokens, created FROM answers LIMIT 1")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
        except BaseException:
            db.close()
            raise
        return db

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r}, hits={self.hits}, misses={self.misses}, stores={self.stores})"

    def _failed(self, exc: Exception) -> None:
        warnings.warn(
            f"the cache {str(self.path)!r} failed ({type(exc).__name__}: {exc}); it is off for the "
            "rest of this process, and answers are not cached",
            CacheWarning,
            stacklevel=3,
        )
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def get(self, key: str) -> Hit | None:
        with self._lock:
            if self._db is None:
                return None
            try:
                row = self._db.execute(
                    "SELECT text, prompt_tokens, completion_tokens FROM answers WHERE key = ?", (key,)
                ).fetchone()
            except sqlite3.Error as exc:
                self._failed(exc)
                return None
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            return Hit(*row)

    def put(self, key: str, model: str, text: str, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        with self._lock:
            if self._db is None:
                return
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                    (key, model, text, prompt_tokens, completion_tokens, time.time()),
                )
                self.stores += 1
            except sqlite3.Error as exc:
                self._failed(exc)

    def __len__(self) -> int:
        with self._lock:
            return 0 if self._db is None else self._db.execute("SELECT count(*) FROM answers").fetchone()[0]

    def clear(self) -> None:
        """Delete every cached answer."""
        with self._lock:
            if self._db is not None:
                self._db.execute("DELETE FROM answers")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


_opened: dict[Path, ResponseCache] = {}  # by resolved path: each file once per process
_given: dict[Path, ResponseCache] = {}  # by the path as checked: a call finds its cache without a syscall
_opened_lock = threading.Lock()


def check_cache(cache: bool | str | os.PathLike | ResponseCache | None = None) -> Path | ResponseCache | bool:
    """``cache`` as a run's settings take it, checked without opening anything: ``False`` (no cache), the file
    to open on the first call (a Path), or a :class:`ResponseCache`. ``None`` or ``True``: the default file
    (``MOA_LAB_CACHE``, else the user cache dir), or False when ``MOA_LAB_CACHE=off``. ValueError for a bad one."""
    if cache is False or isinstance(cache, ResponseCache):
        return cache
    if cache is None or cache is True:
        path = default_path()
        if path is None:
            return False
    elif isinstance(cache, (str, os.PathLike)) and str(cache).strip():
        path = Path(cache).expanduser()
    else:
        raise ValueError(
            f"cache must be True, False, None (the default), a file path or a ResponseCache, got {cache!r}"
        )
    if path.is_dir():
        raise ValueError(f"cache {str(path)!r} is a folder; give a file path such as {str(path / 'cache.sqlite')!r}")
    return path


def get_cache(cache: bool | str | os.PathLike | ResponseCache | None = None) -> ResponseCache | None:
    """The cache a run uses, opened (each file once per process). ``None`` or ``True``: the default file
    (``MOA_LAB_CACHE``, else the user cache dir), or no cache when ``MOA_LAB_CACHE=off``; ``False``: no cache;
    a path: that file; a :class:`ResponseCache`: itself."""
    if isinstance(cache, Path) and cache in _given:
        return _given[cache]
    checked = check_cache(cache)
    if checked is False:
        return None
    if isinstance(checked, ResponseCache):
        return checked
    assert isinstance(checked, Path)  # check_cache gives False, a ResponseCache or a Path
    with _opened_lock:
        key = checked.resolve()
        if key not in _opened:
            _opened[key] = ResponseCache(checked)
        _given[checked] = _opened[key]
        return _opened[key]
