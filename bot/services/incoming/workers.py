"""Worker processes for judging stored messages (judging.judge): parsing untrusted MIME never runs on the event
loop, and never forever.

A JudgePool keeps `size` worker processes (`python -m bot.services.incoming.judge_worker`: a fresh interpreter
sharing nothing with the event loop's process, re-importing no one's __main__) and hands each one job at a time over
a socket pair. A job that takes longer than `timeout` gets its worker killed; a worker that
dies (crash, OOM, SIGKILL) is replaced. Either way the job raises JudgeFailed and the pipeline counts a failed
attempt (retried with backoff, parked after a few). On a 2-core machine one worker is the right size: the event
loop's process needs the other core."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

from bot.services.incoming.judging import Job, Verdict, judge

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0


class JudgeFailed(Exception):
    """The job did not produce a verdict: the worker raised, was too slow (killed) or died."""


class _Worker:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot.services.incoming.judge_worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.connection = Connection(ours.detach())

    def roundtrip(self, job: Job, timeout: float) -> Verdict:
        """Blocking (run in a thread): send the job, wait for the verdict at most `timeout` seconds."""
        try:
            self.connection.send(job)
            if not self.connection.poll(timeout):
                self.kill()
                raise JudgeFailed(f"took longer than {timeout:g} s; the worker was stopped")
            status, value = self.connection.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.kill()
            raise JudgeFailed(f"the worker process died (exit code {self.process.poll()})") from None
        if status != "ok":
            raise JudgeFailed(str(value))
        return value  # type: ignore[no-any-return]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and not self.connection.closed

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        if not self.connection.closed:
            self.connection.close()

    def stop(self) -> None:
        if not self.connection.closed:
            self.connection.close()  # the worker sees EOF and exits
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()


class JudgePool:
    """`await pool.judge(job)`: the verdict from a worker process. Workers start on first use."""

    def __init__(self, size: int = 1, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.size = size
        self.timeout = timeout
        self._idle: asyncio.Queue[_Worker | None] | None = None
        self._workers: list[_Worker] = []
        self._closed = False

    async def judge(self, job: Job) -> Verdict:
        if self._closed:
            raise JudgeFailed("the worker pool is stopped")
        idle = self._queue()
        worker = await idle.get()
        try:
            if worker is None or not worker.alive:
                worker = await asyncio.to_thread(self._replace, worker)
            return await asyncio.to_thread(worker.roundtrip, job, self.timeout)
        finally:
            idle.put_nowait(worker)

    def _queue(self) -> asyncio.Queue[_Worker | None]:
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(self.size):
                self._idle.put_nowait(None)  # a slot: its worker is started when first needed
        return self._idle

    def _replace(self, worker: _Worker | None) -> _Worker:
        if worker is not None:
            log.warning(
                "judge worker %s is gone (exit code %s); starting another", worker.process.pid, worker.process.poll()
            )
            self._workers.remove(worker)
        fresh = _Worker()
        self._workers.append(fresh)
        return fresh

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids (tests kill them)."""
        return [w.process.pid for w in self._workers if w.alive]

    async def close(self) -> None:
        """Stop every worker (they exit on EOF; killed if they do not within 5 s)."""
        self._closed = True
        workers, self._workers = self._workers, []
        for worker in workers:
            await asyncio.to_thread(worker.stop)


class InlineJudge:
    """Judging in a thread of this process: for unit tests of the pipeline and the CLI, not for the server."""

    async def judge(self, job: Job) -> Verdict:
        return await asyncio.to_thread(judge, job)

    async def close(self) -> None:
        return None
