from __future__ import annotations

from sqlalchemy import Boolean, Float, String, text
from sqlalchemy.orm import Mapped, mapped_column

from hubtune.models.base import Base, JSONType, now


class ApiKey(Base):
    """A bearer key. Only its SHA-256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    owner: Mapped[str] = mapped_column(String(128), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Hub namespaces an admin granted this key beyond its owner name (migration 0006): through the
    # server's own hub access a key writes only to its owner's namespace and these (hubtune.namespaces).
    namespaces: Mapped[list[str]] = mapped_column(JSONType, default=list, server_default=text("'[]'"))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
