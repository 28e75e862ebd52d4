"""`collector --processes N`: N collector processes sharing the OTLP ports.

Decoding and normalising telemetry is Python work bound to one core per
process, so one collector cannot use a second core. This parent starts N
ordinary collector processes that listen on the same ports (SO_REUSEPORT:
the kernel spreads connections over them, and collector.balance evens out
the kept-alive ones), waits until every one of them
is serving, restarts any that dies, and on SIGTERM stops them all, each
committing what it acknowledged. Their writers take turns per project (an
advisory lock in collector.writer), so results are the same as with one.

Children never outlive the parent: should it be killed outright (SIGKILL,
the OOM killer), they stop as on SIGTERM, so the ports are free for the
next start instead of held by orphans nobody supervises.

The children keep their metrics in a directory the parent makes for the
run and removes after it (collector.stats), so any child's /metrics
answers for all of them.
"""

import asyncio
import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile

from collector import balance, stats

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 1.0
START_TIMEOUT_SECONDS = 120.0
PARENT_CHECK_SECONDS = 1.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The children's connection counts (collector.balance), beside their metrics.
CONNECTION_COUNTS = "connections"


def check_free(host: str, port: int) -> None:
    """Raise OSError when host:port is taken: the children would join whatever holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def child_command(host: str, http_port: int, grpc_port: int, ready_fd: int) -> list[str]:
    # `python -m django` finds the settings through DJANGO_SETTINGS_MODULE,
    # which manage.py has set in this process's environment.
    return [
        sys.executable, "-m", "django", "collector", "--host", host,
        "--otlp-http-port", str(http_port), "--otlp-grpc-port", str(grpc_port),
        "--shared-ports", "--ready-fd", str(ready_fd), "--parent-pid", str(os.getpid()),
    ]  # fmt: skip


def stop_with_parent(parent_pid: int) -> None:
    """In a child: have the kernel send SIGTERM when the parent dies (Linux).

    If the parent is already gone, stop now: it may have died between
    starting this process and this call, which the kernel would not report.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


async def watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """In a child: set `stop` once the parent is gone (its children are then
    re-parented). Covers systems without PR_SET_PDEATHSIG."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.error("the collector parent (pid %d) is gone; stopping", parent_pid)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PARENT_CHECK_SECONDS)


class Pool:
    """The parent's view of its children."""

    def __init__(self, count: int, host: str, http_port: int, grpc_port: int):
        self.count = count
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.children: list[asyncio.subprocess.Process | None] = [None] * count
        self.stopping = False
        self.metrics_dir: str | None = None

    async def _spawn(self, index: int, ready_fd: int) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *child_command(self.host, self.http_port, self.grpc_port, ready_fd),
            pass_fds=(ready_fd,),
            env={
                **os.environ,
                stats.MULTIPROC_ENV: self.metrics_dir,
                balance.FILE_ENV: os.path.join(self.metrics_dir, CONNECTION_COUNTS),
                balance.INDEX_ENV: str(index),
            },
        )
        self.children[index] = process
        log.info("collector process %d started (pid %d)", index + 1, process.pid)
        return process

    async def run(self, stop: asyncio.Event, on_started=None) -> int:
        """Run until `stop`; returns the exit status for the parent."""
        check_free(self.host, self.http_port)
        check_free(self.host, self.grpc_port)
        read_fd, write_fd = os.pipe()
        self.metrics_dir = tempfile.mkdtemp(prefix="eventscope-metrics-")
        try:
            balance.make_slots(os.path.join(self.metrics_dir, CONNECTION_COUNTS), self.count)
            for index in range(self.count):
                await self._spawn(index, write_fd)
            if not await self._wait_ready(read_fd, stop):
                return 0 if stop.is_set() else 1
            if on_started is not None:
                on_started()
            watchers = [
                asyncio.create_task(self._watch(index, write_fd, stop))
                for index in range(self.count)
            ]
            await stop.wait()
            await self._stop_children()
            for watcher in watchers:
                watcher.cancel()
            return 0
        finally:
            os.close(read_fd)
            os.close(write_fd)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _wait_ready(self, read_fd: int, stop: asyncio.Event) -> bool:
        """Wait for a byte from each child: all serve before the pool says it does,
        so the first clients are not all handed to the fastest starter."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_SECONDS
        ready = 0
        while ready < self.count:
            exited = [p for p in self.children if p is not None and p.returncode is not None]
            if exited or stop.is_set() or loop.time() > deadline:
                if not stop.is_set():
                    log.error("the collector processes did not all start; stopping")
                await self._stop_children()
                return False
            readable = await loop.run_in_executor(None, _readable, read_fd, 0.2)
            if readable:
                ready += len(os.read(read_fd, self.count))
        return True

    async def _watch(self, index: int, ready_fd: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            process = self.children[index]
            code = await process.wait()
            if self.stopping or stop.is_set():
                return
            # Its queue and bytes in flight are gone with it; its counts stay.
            stats.mark_dead(process.pid, self.metrics_dir)
            log.error(
                "collector process %d (pid %d) exited with %s; restarting",
                index + 1, process.pid, code,
            )  # fmt: skip
            await asyncio.sleep(RESTART_DELAY_SECONDS)
            if not stop.is_set():
                await self._spawn(index, ready_fd)

    async def _stop_children(self) -> None:
        self.stopping = True
        running = [p for p in self.children if p is not None and p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        # Each child drains its writer before it exits; that can take a while.
        await asyncio.gather(*(p.wait() for p in running))


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])
