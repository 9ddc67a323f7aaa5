"""Torch networks only: encoders, fusion blocks, the backends and their registry."""
