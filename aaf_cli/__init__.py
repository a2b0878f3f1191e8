"""aaf: does an adaptive activation function help your network learn? A fair, fast answer."""

__version__ = "0.1.0"
