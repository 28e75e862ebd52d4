"""`record(...)`: the one way a feature writes to the audit log.

    from dashboard.audit.trail import record
    record("token.created", request=request, project=project, target="read token “grafana”",
           details={"scope": "read"})

Actions are `<thing>.<verb>` (models.ACTIONS lists them; a new feature adds its own).
Edits put the changed fields in `details` as {"before": {...}, "after": {...}}
(see `changes`). Secrets never go into details: say that one changed.
Every record is also written to the Python log (logger `dashboard.audit`).
"""

import logging

from dashboard.accounts.signin import client_ip
from dashboard.audit.models import ACTIONS, AuditEvent

log = logging.getLogger("dashboard.audit")

# Failures are what someone watching the log wants to notice.
WARNING_ACTIONS = {"login.failed", "login.locked_out", "member.create_refused"}


def record(
    action: str,
    *,
    request=None,
    actor: str | None = None,
    project=None,
    target: str = "",
    details: dict | None = None,
    ip: str | None = None,
) -> AuditEvent:
    """Append one audit event and log it.

    `actor` defaults to the signed-in user of `request` ("" when none: a
    failed sign-in names the attempted username in `details`); `ip` to the
    request's client address (the rule axes uses). `project` is a Project or
    None for events of the whole installation (sign-ins).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}: add it to ACTIONS")
    if actor is None:
        user = getattr(request, "user", None)
        actor = user.get_username() if user is not None and user.is_authenticated else ""
    if ip is None and request is not None:
        ip = client_ip(request)
    event = AuditEvent(
        actor=actor[:150],
        project=project,
        project_slug=project.slug if project is not None else "",
        action=action,
        target=target[:300],
        ip=ip,
        details=details or {},
    )
    event.save()
    log.log(
        logging.WARNING if action in WARNING_ACTIONS else logging.INFO,
        "audit: %s by %s from %s%s%s",
        action,
        actor or "-",
        ip or "unknown address",
        f" in project {project.slug}" if project is not None else "",
        f": {target}" if target else "",
    )
    return event


def changes(before: dict, after: dict) -> dict:
    """{"before": {...}, "after": {...}} holding only the fields that differ."""
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return {
        "before": {k: before.get(k) for k in changed},
        "after": {k: after.get(k) for k in changed},
    }
