"""Preference memory: the service over ``retrieval``'s store, the ``recall`` and ``remember`` stages,
the extractor backends and the background writer."""
