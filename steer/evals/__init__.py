"""Quality evaluations (``steer eval ...``)."""
