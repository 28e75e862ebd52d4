"""Members, roles and API tokens of a project, and signing in."""
