"""Delivery guarantees: duplicate, missing, late, out-of-order and poison events.

The worker's `delivery` loop (pass.py) turns newly stored stages into findings
(models.py); the Delivery page, GET /api/findings, the alert kinds and the
badges on journeys and flow edges read them (queries.py).
"""
