"""Domain exceptions, so callers can tell a bad input from a programming error."""


class RgbdSegError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(RgbdSegError):
    """A configuration value (parameter, YAML, CLI flag) is invalid."""


class CheckpointError(RgbdSegError):
    """A checkpoint file is missing, truncated, corrupt or does not match its model."""


class FrameError(RgbdSegError):
    """An input frame cannot be used (encoding, size, intrinsics)."""


class DatasetError(RgbdSegError):
    """A dataset folder or recording does not follow the expected layout."""


class EmptySplitError(DatasetError):
    """A dataset split holds no labelled frame (a run without validation, say)."""
