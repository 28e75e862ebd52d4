"""A TCP forwarder to PostgreSQL that a test (or the hostile-load bench) can
cut, as a database that stopped, or slow down, as a busy one.

The shared server is never touched: the writer under test is pointed at the
proxy's port, and only its connections feel the fault.
"""

import asyncio
import contextlib
import threading

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class TcpProxy:
    """Forward 127.0.0.1:<port> to `target`; runs on the current event loop."""

    def __init__(self, host: str, port: int, *, bytes_per_second: float | None = None):
        self.target = (host, port)
        # Limits what clients send to the server (the writer's COPY data).
        self.bytes_per_second = bytes_per_second
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def for_conninfo(cls, conninfo: str, **kwargs) -> "TcpProxy":
        params = conninfo_to_dict(conninfo)
        return cls(params.get("host") or "127.0.0.1", int(params.get("port") or 5432), **kwargs)

    def conninfo(self, conninfo: str) -> str:
        """`conninfo` with its host and port replaced by the proxy's."""
        params = {k: v for k, v in conninfo_to_dict(conninfo).items() if v not in (None, "")}
        return make_conninfo(**{**params, "host": "127.0.0.1", "port": str(self.port)})

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def cut(self) -> None:
        """Stop listening and drop every connection, as a server that went away."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def restore(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def stop(self) -> None:
        await self.cut()

    async def _accept(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, self.bytes_per_second)),
            asyncio.create_task(self._pipe(up_reader, writer, None)),
        ]
        self._tasks.update(tasks)
        for task in tasks:
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader, writer, rate) -> None:
        try:
            while data := await reader.read(16384):
                writer.write(data)
                await writer.drain()
                if rate:
                    await asyncio.sleep(len(data) / rate)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()


class ThreadedProxy:
    """A TcpProxy on an event loop of its own thread, for blocking code (the bench)."""

    def __init__(self, conninfo: str, **kwargs):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = TcpProxy.for_conninfo(conninfo, **kwargs)
        self._call(self.proxy.start())

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    def conninfo(self, conninfo: str) -> str:
        return self.proxy.conninfo(conninfo)

    def cut(self) -> None:
        self._call(self.proxy.cut())

    def restore(self) -> None:
        self._call(self.proxy.restore())

    def close(self) -> None:
        self._call(self.proxy.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
