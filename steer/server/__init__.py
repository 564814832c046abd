"""The HTTP layer: the app (``steer.server.app.create_app``), its routes, authentication, metrics, and
how ``steer serve`` runs uvicorn. Nothing below this package imports it."""
