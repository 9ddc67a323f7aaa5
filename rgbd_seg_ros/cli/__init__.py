"""The ``rgbd-seg`` command: thin argument parsing on top of the layers below."""
