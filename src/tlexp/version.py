"""tlexp's version, in a module of its own so that any layer can read it (the package's
``__init__`` imports the library API, which nothing below it may import)."""

__version__ = "0.1.0"
