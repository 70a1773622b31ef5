"""The local alert receiver: Alertmanager's webhook target in the embedded platform.

`telescore up` starts it (`python -m telescore.jobs.alert_receiver`) next to the embedded
Alertmanager, which posts every notification to `POST /alerts` with a bearer token that only
the two of them hold. Each alert is appended to the alert log (`io/alert_log.py`) and written
to the receiver's own log, so that a person sees alerts arrive with no chat or mail set up:
`telescore alerts`, the app's `GET /alerts`, or `.telescore/logs/alert-receiver.log`.

A process of its own, not a route of the web app: the app being down is one of the alerts.
Standard library only, so that it starts in a fraction of a second and holds little memory.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Final

from pydantic import ValidationError

from telescore.core.alerts import Notification, alert_records
from telescore.io.alert_log import AlertLog

logger = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1 << 20
"""Larger notifications are refused (413); a group of 1,000 alerts is well under it."""
ALERTS_PATH: Final = "/alerts"
HEALTH_PATH: Final = "/health"


class AlertReceiver(ThreadingHTTPServer):
    """An HTTP server that records Alertmanager's notifications bearing `token`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], token: str, log: AlertLog) -> None:
        super().__init__(address, _Handler)
        self.token = token
        self.log = log

    @property
    def url(self) -> str:
        """Where Alertmanager posts: `http://host:port/alerts`."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{ALERTS_PATH}"

    def receive(self, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        """Record one notification's alerts; return the status and answer to send."""
        try:
            notification = Notification.model_validate_json(body)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "body"
            return HTTPStatus.UNPROCESSABLE_ENTITY, {"detail": f"{field}: {first['msg']}"}
        records = alert_records(notification, datetime.now(UTC))
        recorded = self.log.append(records)
        for record in records:
            logger.warning(
                "alert %s: %s (%s) %s",
                record["status"],
                record["alertname"],
                record["severity"],
                record["summary"],
            )
        return HTTPStatus.OK, {"recorded": recorded}


class _Handler(BaseHTTPRequestHandler):
    server: AlertReceiver

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path == HEALTH_PATH:
            self._answer(HTTPStatus.OK, {"status": "ok"})
        else:
            self._answer(HTTPStatus.NOT_FOUND, {"detail": f"no such path: {self.path[:100]}"})

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path != ALERTS_PATH:
            self._answer(HTTPStatus.NOT_FOUND, {"detail": f"no such path: {self.path[:100]}"})
            return
        if not self._authorized():
            self._answer(HTTPStatus.UNAUTHORIZED, {"detail": "a valid bearer token is required"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(HTTPStatus.LENGTH_REQUIRED, {"detail": "Content-Length is required"})
            return
        if length > MAX_BODY_BYTES or length < 0:
            self._answer(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"detail": f"body: at most {MAX_BODY_BYTES} bytes"},
            )
            return
        status, answer = self.server.receive(self.rfile.read(length))
        self._answer(status, answer)

    def _authorized(self) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        # Compared in constant time: the answer's timing says nothing about the token.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.encode(), self.server.token.encode()
        )

    def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        logger.debug(format, *args)


def serve(receiver: AlertReceiver, stop: threading.Event) -> None:
    """Serve until `stop` is set."""
    thread = threading.Thread(target=receiver.serve_forever, name="alert-receiver", daemon=True)
    thread.start()
    stop.wait()
    receiver.shutdown()
    receiver.server_close()
    thread.join()


def _stopper(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return handle


def main(argv: list[str] | None = None) -> None:
    """Run the receiver: `python -m telescore.jobs.alert_receiver --port N --log-file F ...`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-file", type=Path, required=True, help="the alert log (JSON lines)")
    parser.add_argument("--token-file", type=Path, required=True, help="the bearer token")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    token = arguments.token_file.read_text().strip()
    receiver = AlertReceiver(
        (arguments.host, arguments.port), token, AlertLog(arguments.log_file.resolve())
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, _stopper(stop))
    signal.signal(signal.SIGINT, _stopper(stop))
    logger.info("alert receiver on %s, logging to %s", receiver.url, arguments.log_file)
    serve(receiver, stop)


if __name__ == "__main__":
    main()
