"""The OpScope application: session state, scheduling, windows and the command line."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("opscope")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0.1.0"
