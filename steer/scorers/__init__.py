"""Built-in scorers. Each module registers itself with ``@scorers.register``."""
