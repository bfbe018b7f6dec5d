"""The installed package's version (a module of its own, so that any module may name it without
importing the package's face)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("universal-model")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
