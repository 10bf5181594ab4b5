"""The hubtune API server: FastAPI app with the OpenAI-compatible /v1 fine-tuning API."""

from server.app import create_app

__all__ = ["create_app"]
