"""`ragtune serve` beyond loopback: a startup warning that anyone who can reach it can log feedback that trains the model."""

from __future__ import annotations

import logging

import pytest

from ragtune import Ragtune
from ragtune.server.run import exposure_warning, is_loopback, serve


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts_get_no_warning(host: str):
    assert is_loopback(host) and exposure_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "myhost.example.com"])
def test_other_hosts_are_warned_about(host: str):
    message = exposure_warning(host)
    assert not is_loopback(host) and message is not None
    assert host in message and "trains the model" in message and "auth" in message


def test_serve_logs_the_warning_at_startup(workspace: Ragtune, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    import uvicorn

    hosts: list[str] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **kw: hosts.append(self.config.host))  # start nothing: the warning comes first
    with caplog.at_level(logging.WARNING, logger="ragtune.server.run"):
        serve(workspace, host="0.0.0.0", port=1)
        serve(workspace, host="127.0.0.1", port=1)
    assert hosts == ["0.0.0.0", "127.0.0.1"]
    warned = [r.getMessage() for r in caplog.records if r.name == "ragtune.server.run" and r.levelno == logging.WARNING]
    assert warned == [exposure_warning("0.0.0.0")]
