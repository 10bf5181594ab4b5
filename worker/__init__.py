"""Celery tasks and the training engine. Heavy imports (torch, transformers) happen inside tasks."""
