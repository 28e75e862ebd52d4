"""Static files: WhiteNoise, made quiet and asynchronous under ASGI.

WhiteNoise serves a file as a FileResponse over a synchronous iterator.
Under ASGI, Django can only consume that by reading the whole file in a
thread first, and warns about it on every static file ("StreamingHttpResponse
must consume synchronous iterators"); here the file is read in chunks, each
in a thread, by an asynchronous iterator. And STATIC_ROOT only exists after
`collectstatic`, which the app does not need (the finders serve
./static): a missing one is not worth a warning at every start.
"""

import asyncio
import os

from django.core.handlers.asgi import ASGIRequest
from whitenoise.middleware import WhiteNoiseMiddleware

CHUNK_BYTES = 64 * 1024


async def _chunks(file):
    while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
        yield chunk


async def _nothing():
    return
    yield  # an async generator that yields nothing (HEAD, 304)


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    def add_files(self, root, prefix=None):
        if not self.autorefresh and not os.path.isdir(root):
            return
        super().add_files(root, prefix)

    @staticmethod
    def serve(static_file, request):
        response = WhiteNoiseMiddleware.serve(static_file, request)
        if isinstance(request, ASGIRequest):
            # The file stays among the response's closers: closed when sent.
            file = response.file_to_stream
            response.streaming_content = _chunks(file) if file is not None else _nothing()
        return response
