"""Traces and event journeys: search by id, /traces/<id>, /events/<id> and their JSON API."""
