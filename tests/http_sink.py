"""A threaded HTTP server on 127.0.0.1 and a free port, for the outside world
a test talks to (a collector the demo exports to, a webhook a replay posts to).
Subclasses bring their handler and what they keep."""

import http.server
import threading


class LocalHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """No access log on the test's output."""

    def log_message(self, *args):
        pass
