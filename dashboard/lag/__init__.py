"""Consumer lag: /lag/ and one group's page (live), GET /api/lag, and lag on flow edges."""
