"""The web inspector at ``/ui/``: server-rendered pages over the services the API uses (memories,
profiles, the request log, the kept traces, the policy set, readiness and metrics).

Rules: plain links for navigation (no page needs a script), every state change a POST carrying a CSRF
token, every user-controlled string rendered as text (Jinja2 autoescape), a strict Content-Security-Policy,
access as in the API (``steer.server.ui.sessions``).
"""
