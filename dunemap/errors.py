"""The package's exception hierarchy: one root, each subclass also a matching builtin."""


class DunemapError(Exception):
    """Root of every error dunemap raises on purpose; the CLI prints it as one line and exits 1."""


class InputError(DunemapError, ValueError):
    """A file or value given by the user is malformed (wrong bands, NaN, bad label id ...)."""


class ConfigError(DunemapError, ValueError):
    """An option is unknown or inconsistent; the message lists the valid choices."""


class CheckpointError(DunemapError, ValueError):
    """A checkpoint cannot be loaded or does not match what it is used with."""


class RasterIOError(DunemapError, OSError):
    """A raster cannot be opened, read or written."""
