"""The ingest service's HTTP API."""

from labelfree.core.app import create_app

app = create_app("ingest")
