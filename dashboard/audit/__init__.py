"""The audit log: who did what, when, from where (see models.py).

Features record with `dashboard.audit.trail.record(...)`; the page is
/audit/ and the API GET /api/audit, both for admins.
"""
