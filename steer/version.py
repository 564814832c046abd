"""steer's version (``steer.__version__``): one place, for the package and its OpenAPI document."""

__version__ = "0.1.0"
