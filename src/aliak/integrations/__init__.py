"""Thin shells over the public API: requests, httpx, WSGI, ASGI.

Each module imports its framework lazily (install the matching extra), and uses only
what :mod:`aliak` exports plus the shared HTTP helpers in :mod:`aliak.integrations.http`.
"""
