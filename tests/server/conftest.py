"""Fixtures: the tiny workspace served by a real uvicorn server on loopback (see :mod:`tests.server.live`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ragtune import Ragtune
from tests.server.live import Client, running


@pytest.fixture()
def service(workspace: Ragtune) -> Iterator[Client]:
    """The indexed tiny workspace served without an API key."""
    with running(workspace) as port:
        client = Client(port)
        yield client
        client.close()


@pytest.fixture()
def keyed(workspace: Ragtune) -> Iterator[Client]:
    """The indexed tiny workspace served with the API key ``s3cret``."""
    with running(workspace, api_key="s3cret") as port:
        client = Client(port)
        yield client
        client.close()
