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

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
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
    # Both kinds, so under ASGI it adds no thread hop to every request.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._acall(request)
        response = self.get_response(request)
        user = getattr(request, "user", None) if _may_be_private(request) else None
        return _finish(request, response, user)

    async def _acall(self, request):
        response = await self.get_response(request)
        user = None
        if _may_be_private(request) and hasattr(request, "auser"):
            # The lazy request.user would query the session from async code.
            user = await request.auser()
        return _finish(request, response, user)


def _may_be_private(request) -> bool:
    """False for static files, which no session or user reaches."""
    return not request.path_info.startswith(settings.STATIC_URL)


def _finish(request, response, user):
    response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    private = request.path_info.startswith("/api/") or (user is not None and user.is_authenticated)
    if private:
        patch_cache_control(response, no_store=True, private=True)
    return response
