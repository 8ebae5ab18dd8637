"""The inference service's HTTP API."""

from labelfree.core.app import create_app

app = create_app("inference")
