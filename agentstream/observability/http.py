"""The metrics port: ``/metrics`` (Prometheus), ``/livez``, ``/readyz``, ``/healthz``; anything
else is 404.

A WSGI app on prometheus-client's threading WSGI server, in a daemon thread (as
``prometheus_client.start_http_server`` does), so the endpoints answer even while the event loop
is stuck: that is what ``/livez`` has to report. The health answers come from a
:class:`~agentstream.observability.health.HealthSource` attached once the worker exists; before
that the process is live and not ready.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from agentstream.observability.health import HealthSource, Starting, Verdict

StartResponse = Callable[..., Any]
_JSON = (("Content-Type", "application/json"),)


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (a probe every few seconds would flood it)."""

    def log_message(self, format: str, *args: Any) -> None:
        return


class MetricsServer:
    """The worker's HTTP endpoints on ``port``; ``health`` may be replaced at any time."""

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        self.health: HealthSource = Starting()
        self._metrics = make_wsgi_app()
        self._server = make_server(
            addr, port, self, server_class=ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="agentstream-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            result: Iterable[bytes] = self._metrics(environ, start_response)
            return result
        if path == "/livez":
            return _verdict(self.health.livez(), start_response)
        if path == "/readyz":
            return _verdict(self.health.readyz(), start_response)
        if path == "/healthz":
            report = self.health.healthz()
            ok = report.get("status") == "ok"
            return _json(report, "200 OK" if ok else "503 Service Unavailable", start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics, /livez, /readyz, /healthz\n"]


def _verdict(verdict: Verdict, start_response: StartResponse) -> list[bytes]:
    status = "200 OK" if verdict.ok else "503 Service Unavailable"
    return _json(verdict.as_dict(), status, start_response)


def _json(body: dict[str, Any], status: str, start_response: StartResponse) -> list[bytes]:
    start_response(status, list(_JSON))  # the server adds to the list it gets
    return [json.dumps(body, default=str).encode() + b"\n"]
