"""Failed and dead-lettered events: /failures/ (live) and GET /api/failures."""
