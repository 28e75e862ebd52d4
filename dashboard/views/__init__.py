"""Server-rendered pages: flow graph, journeys, failures, tokens and members."""
