"""Security headers. Every response gets nosniff and no-referrer; the dashboard's own pages also get a
strict content policy (only its own scripts and styles, talking only to its own origin) and may not be
framed. The policy is kept off /docs, whose Swagger UI loads from a CDN by FastAPI's design."""

from __future__ import annotations

from fastapi import Request

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
ALWAYS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
DASHBOARD = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin"}


def _is_dashboard(path: str) -> bool:
    return path == "/" or path.startswith("/dashboard/")


async def security_headers(request: Request, call_next):
    response = await call_next(request)
    headers = {**ALWAYS, **(DASHBOARD if _is_dashboard(request.url.path) else {})}
    for name, value in headers.items():
        response.headers.setdefault(name, value)
    return response
