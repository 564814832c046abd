"""What tests (steer's and its users') use.

- ``steer.testing.stub``: a stub OpenAI-compatible upstream, a real HTTP server (benchmarks, and
  tests of the network path).
- ``steer.testing.fake``: the ``fake`` upstream backend, the stub's answers in process.
- ``steer.testing.asgi``: steer's app in process, its lifespan run, requests through httpx's
  ``ASGITransport`` (no socket).
"""
