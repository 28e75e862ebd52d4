"""The flow graph: services and channels with their traffic (/, GET /api/flow, /ws/flow/)."""
