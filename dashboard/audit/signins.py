"""Sign-ins, failed sign-ins, lockouts and sign-outs, into the audit log.

Django's auth signals drive this. Receivers run in the order they were
connected, and axes (listed before this app in INSTALLED_APPS) connects
first: by the time `failed` runs, axes has counted the attempt and set
`request.axes_locked_out` when it is refused or tripped the lockout. So
each attempt leaves exactly one row: `login.failed`, or `login.locked_out`.
"""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from dashboard.audit.trail import record


@receiver(user_logged_in, dispatch_uid="audit-signed-in")
def signed_in(sender, request, user, **kwargs):
    if request is None:  # force_login and other sign-ins without a request
        return
    record("login.succeeded", request=request, actor=user.get_username())


@receiver(user_login_failed, dispatch_uid="audit-sign-in-failed")
def failed(sender, credentials, request=None, **kwargs):
    if request is None:  # authenticate() called from code, not a sign-in form
        return
    # The actor is the username tried (it may name no account): the sign-in
    # history of one name is then one filter away.
    username = str(credentials.get("username") or "")[:150]
    locked = bool(getattr(request, "axes_locked_out", False))
    failures = getattr(request, "axes_failures_since_start", None)
    record(
        "login.locked_out" if locked else "login.failed",
        request=request,
        actor=username,
        details={"failures": failures} if failures is not None else {},
    )


@receiver(user_logged_out, dispatch_uid="audit-signed-out")
def signed_out(sender, request, user, **kwargs):
    if request is None or user is None:
        return
    record("logout", request=request, actor=user.get_username())
