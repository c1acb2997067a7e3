"""The judge worker process: `python -m bot.services.incoming.judge_worker <fd>` judges jobs received on the socket
`fd` until it closes (see workers.JudgePool). Not imported by the package, so `-m` runs it cleanly."""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection
from typing import Any

from bot.services.incoming.judging import judge


def _serve(connection: Connection) -> None:
    """The worker process: judge jobs until the pipe closes."""
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", judge(job))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which counts a failed attempt
            reply = ("error", f"{type(exc).__name__}: {str(exc)[:300]}")
        connection.send(reply)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
