"""Security headers, on every response (the middleware is the app's outermost, so error answers from
the limits get them too).

Every response: nosniff, no referrer, and no framing. The dashboard's own pages get a strict content
policy (only its own scripts and styles, talking only to its own origin). API answers get a policy that
lets nothing load or run (they are JSON or downloads, never pages) and `Cache-Control: no-store`, since
they may carry owner data (a shared cache or the browser's disk must not keep them). The policy is kept
off /docs and /redoc, whose pages load from a CDN by FastAPI's design.
"""

from __future__ import annotations

from fastapi import Request

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"
ALWAYS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
DASHBOARD = {"Content-Security-Policy": CSP, "Cross-Origin-Opener-Policy": "same-origin"}
API = {"Content-Security-Policy": API_CSP, "Cache-Control": "no-store"}


def _is_dashboard(path: str) -> bool:
    return path == "/" or path.startswith("/dashboard/")


def _is_api(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1" or path in ("/healthz", "/metrics")


def headers_for(path: str) -> dict[str, str]:
    extra = DASHBOARD if _is_dashboard(path) else API if _is_api(path) else {}
    if _is_dashboard(path) and not path.startswith("/dashboard/static/"):
        extra = {**extra, "Cache-Control": "no-store"}  # the session answer carries the CSRF token
    return {**ALWAYS, **extra}


async def security_headers(request: Request, call_next):
    response = await call_next(request)
    for name, value in headers_for(request.url.path).items():
        response.headers.setdefault(name, value)
    return response
