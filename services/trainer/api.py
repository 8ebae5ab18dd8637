"""The trainer service's HTTP API."""

from labelfree.core.app import create_app

app = create_app("trainer")
