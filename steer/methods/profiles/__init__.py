"""Latent preference profiles: the math, the service, feedback pairs, the ``steer profiles fit``
command, and the ``candidates`` and ``rerank`` stages."""
