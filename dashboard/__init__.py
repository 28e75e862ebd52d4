"""The web app: one package per feature (flow, journeys, failures, lag, alerts,
replays, accounts), and at this top level the pieces they share (access,
query parameters, links, live updates, JSON API helpers). See ARCHITECTURE.md."""
