"""Recordings, dataset layout, importers and the synthetic scene generator."""
