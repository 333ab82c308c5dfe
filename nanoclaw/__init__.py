"""NanoClaw server: chat apps in, containerised agent turns out."""
__version__ = "0.1.0"
__all__ = ["__version__"]
