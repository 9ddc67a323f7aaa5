"""Numpy-only building blocks: frames, depth handling, palettes, projection, pairing."""
