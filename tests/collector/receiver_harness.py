"""Running receivers for tests: real uvicorn and grpc.aio servers on ephemeral ports."""

import asyncio
import contextlib

import uvicorn

from collector.admission import Admission
from collector.db import conninfo
from collector.receivers.otlp_grpc import start_grpc_server
from collector.receivers.otlp_http import make_app
from collector.writer import Writer


@contextlib.asynccontextmanager
async def running_writer():
    """The real storage writer on the test database (needs `telemetry_db`), drained on exit."""
    storage = Writer(conninfo(), linger=0)
    await storage.start()
    try:
        yield storage
    finally:
        await storage.stop()


class CollectingWriter:
    """Keeps submitted batches in memory, for checking what the receivers hand over."""

    def __init__(self):
        self.batches = []
        self.admission = Admission(256 * 1024 * 1024)

    def admit(self):
        pass

    async def make_way(self):
        pass

    async def submit(self, batch):
        self.batches.append(batch)

    async def ready(self):
        return True

    def spans(self):
        return [span for batch in self.batches for span in batch.spans]

    def stages(self):
        return [stage for batch in self.batches for stage in batch.stages]


class RefusingWriter:
    """A writer that refuses every batch the way a full queue or a down database does.

    Used to check the receivers' 429/503 answers without having to fill a
    real queue; `ready()` reflects the refusal too.
    """

    def __init__(self, error):
        self.error = error
        self.submitted = 0
        self.admission = Admission(256 * 1024 * 1024)

    def admit(self):
        # As the real writer does: refuse before the body is read and decoded.
        raise self.error

    async def make_way(self):
        pass

    async def submit(self, batch):
        self.submitted += 1
        raise self.error

    async def ready(self):
        return False


class FaultyWriter(CollectingWriter):
    """A writer with a bug: `submit` raises something that is not IngestUnavailable.

    Nothing in decoding or normalising is known to raise unexpectedly any
    more, so this is how the receivers' last-resort answer is reached."""

    async def submit(self, batch):
        raise RuntimeError("a bug, not bad data")


@contextlib.asynccontextmanager
async def http_receiver(writer):
    """The OTLP/HTTP receiver served by uvicorn on 127.0.0.1:<ephemeral>; yields its base URL.

    With `writer=None` the receiver gets a CollectingWriter (tests of answers
    that are decided before anything is stored)."""
    config = uvicorn.Config(
        make_app(writer if writer is not None else CollectingWriter()),
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def grpc_receiver(writer):
    """The OTLP/gRPC receiver on 127.0.0.1:<ephemeral>; yields 'host:port'."""
    writer = writer if writer is not None else CollectingWriter()
    server = await start_grpc_server(writer, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.bound_port}"
    finally:
        await server.stop(grace=None)
