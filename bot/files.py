"""Files only the bot may read. DATA_DIR holds the SQLite database (SMTP password ciphertexts, OTP HMACs), the
key file and the outbox (mail that holds one-time passwords and leads when no relay is set): DATA_DIR is 0700 and
every file the bot keeps 0600 — created so, and tightened at start, with a log line, when an older install (or an
operator's copy) left them readable by other local users."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")  # SQLite creates these with the database file's mode


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) as 0700, or tighten it to 0700."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR)


def create_private_file(path: Path) -> None:
    """Create an empty file with mode 0600 unless it exists (a race with another process is fine)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        pass


def secure_data(data_dir: Path, sqlite_path: Path | None) -> None:
    """At start: DATA_DIR (and its outbox) 0700; key files (*.key, *.pem), outbox mail and the SQLite database with
    its WAL/SHM 0600. The database is created 0600 before the first connection, so SQLite creates its WAL and SHM
    files 0600 too (it gives them the database file's mode)."""
    private_dir(data_dir)
    outbox = data_dir / "outbox"
    if outbox.is_dir():
        _tighten(outbox, PRIVATE_DIR)
    # Only what the bot itself keeps there (DATA_DIR might be a directory shared with other things).
    kept = [*data_dir.glob("*.key"), *data_dir.glob("*.pem"), *outbox.glob("*.eml")]
    for path in kept:
        if path.is_file() and not path.is_symlink():
            _tighten(path, PRIVATE_FILE)
    if sqlite_path is not None:
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        create_private_file(sqlite_path)
        for path in (sqlite_path, *(Path(f"{sqlite_path}{suffix}") for suffix in SQLITE_COMPANIONS)):
            if path.is_file():
                _tighten(path, PRIVATE_FILE)


def _tighten(path: Path, wanted: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & ~wanted:
        try:
            path.chmod(wanted)
        except PermissionError:  # not ours to change (another owner, a read-only mount): say so, don't stop
            log.warning(
                "%s is mode %04o, open to other local users, and can't be tightened: make it %04o",
                path,
                current,
                wanted,
            )
            return
        log.warning("%s was mode %04o, open to other local users: tightened to %04o", path, current, wanted)
