"""Shared platform layer: settings, database, job state, object store, images."""
