"""Replays: re-sending a stored CloudEvent to a webhook, and the record of each."""
