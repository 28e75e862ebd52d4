"""Headers every web response carries (Django 5.2 has no CSP of its own).

- Content-Security-Policy: scripts and styles only from our own files, so
  an injected `<script>` or `onclick=` does nothing. Templates therefore
  hold no inline script, event handler or style attribute
  (tests/dashboard/test_security_headers.py scans them); behaviour lives in
  static/js. JavaScript may still set `element.style` (uPlot, cytoscape do).
  Websockets (`/ws/…`) need ws:/wss: in connect-src for older browsers, in
  which 'self' does not cover them.
- Cache-Control: no-store on every /api/ answer and on every page shown to
  a signed-in person, so a shared browser's back button or a proxy never
  serves someone's data again.

X-Frame-Options, X-Content-Type-Options, Referrer-Policy and HSTS come
from Django's own middleware (settings.py).
"""

from django.conf import settings
from django.utils.cache import patch_cache_control

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self' ws: wss:",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if self._private(request):
            patch_cache_control(response, no_store=True, private=True)
        return response

    @staticmethod
    def _private(request) -> bool:
        path = request.path_info
        if path.startswith(settings.STATIC_URL):
            return False
        if path.startswith("/api/"):
            return True
        user = getattr(request, "user", None)
        return user is not None and user.is_authenticated
