"""The package version, named once (pyproject.toml reads it from here), and the program's name."""

__version__ = "0.1.0"
PROG = "remote-http-launcher"
