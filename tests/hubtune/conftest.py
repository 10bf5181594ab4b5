from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hubtune.db import engine_for
from hubtune.migrate import upgrade
from testkit.services import postgres_database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'core.db'}"
        upgrade(url)
        yield url
        engine_for(url).dispose()
    else:
        with postgres_database("hubtune_core") as url:
            yield url


@pytest.fixture
def sessions(db_url) -> sessionmaker[Session]:
    return sessionmaker(bind=engine_for(db_url), expire_on_commit=False)
