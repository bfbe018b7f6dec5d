"""Errors the library raises on bad input; each message names the problem and the fix."""


class UniversalError(Exception):
    """Base class: the CLI prints these as one line, the app answers them with HTTP 4xx."""


class UnknownClassError(UniversalError, KeyError):
    """A class name or id that the catalogue does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CatalogError(UniversalError):
    """A malformed class catalogue."""


class DuplicateClassError(CatalogError):
    """A new class whose name (or synonym) the catalogue already holds."""


class CheckpointError(UniversalError):
    """A checkpoint that cannot be read or does not fit the model."""


class DiskFullError(UniversalError):
    """A write that found its disk full; what was there before is unchanged."""


class ReadOnlyError(UniversalError):
    """A change asked of a folder this process may only read."""


class WeightsUnavailableError(UniversalError):
    """Weights that are neither on disk nor downloadable."""
