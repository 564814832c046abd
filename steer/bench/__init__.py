"""Benchmarks (``steer bench ...``) and the stub upstream they drive."""
