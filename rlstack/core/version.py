"""The installed rlstack's version (``2.0.0.dev0`` when run from a source tree)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rlstack")
except PackageNotFoundError:  # running from a source tree
    __version__ = "2.0.0.dev0"
