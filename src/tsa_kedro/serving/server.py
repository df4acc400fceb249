"""An HTTP endpoint for one model bundle, speaking the SageMaker inference contract.

::

    python -m tsa_kedro.serving.server --model path/to/model.tar.gz   # or the folder

- ``GET /ping``: 200 once the model is loaded (the server accepts no request before);
- ``POST /invocations``: raw orders as ``application/json`` or ``text/csv`` (also
  ``text/tab-separated-values``), answered as ``application/json`` (the default) or
  ``text/csv`` after the request's ``Accept``. The body goes through the bundle
  handler's ``input_fn``, ``predict_fn`` and ``output_fn``, the functions the
  SageMaker serving container calls: there is no other scoring path.

Rejected, each with a JSON body ``{"error": <what to fix>, "status": <code>}``:

- 404 an unknown path, 405 a method other than ``GET /ping`` and ``POST /invocations``;
- 411 a request without ``Content-Length`` (e.g. a chunked body), 413 a
  ``Content-Length`` over ``--max-body-bytes`` (checked before the body is read), 400
  a ``Content-Length`` that is not a number or a body shorter than it;
- 415 a content type other than the three above, 406 an ``Accept`` that allows
  neither ``application/json`` nor ``text/csv`` (``*/*``, ``application/*`` and
  ``text/*`` are understood; ``q=0`` excludes a type);
- 400 what ``input_fn`` and ``predict_fn`` refuse as a payload problem
  (``PayloadError``: malformed JSON or CSV, JSON nested too deeply, an empty batch,
  more orders than the bundle's ``max_batch_size``, order ids that repeat, a bad
  ``explain`` or ``top_k`` or an unknown query parameter);
- 422 orders that the raw-order validation refuses (``RawDataError``: missing contract
  columns, values that do not parse);
- 500 anything else, with a generic message; the traceback goes to the log only.

Server: the endpoint is a small WSGI application served by gunicorn with threaded
workers (``gthread``), locally and in the container alike, so what is tested here is
what runs in production. gunicorn is the usual production WSGI server (SageMaker's own
framework containers front their models with it), is already pinned in
requirements.lock, supervises and restarts its workers, bounds header sizes, and
handles keep-alive, slow clients and graceful shutdown on SIGTERM, none of which the
standard library's ``http.server`` does. Each worker loads the model itself, after the
fork: forking a process that has run torch or ONNX Runtime (their thread pools)
is not safe. The master only checks the path and unpacks an archive once. A model that
does not load stops the server: the worker prints why and gunicorn exits with status 4
(a missing or unreadable path: status 1 before gunicorn starts).

Settings (flag, then environment variable, then default): ``--host`` (127.0.0.1),
``--port`` (``SAGEMAKER_BIND_TO_PORT``, 8080), ``--workers``
(``SAGEMAKER_MODEL_SERVER_WORKERS``, 1: each holds its own copy of the model),
``--threads`` (requests one worker serves at once, 4), ``--timeout``
(``SAGEMAKER_MODEL_SERVER_TIMEOUT``, 60 s: a worker silent for longer is restarted),
``--max-body-bytes`` (``TSA_MAX_BODY_BYTES``, 6 MiB, SageMaker's real-time payload
limit).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tsa_kedro.serving.payload import (
    CSV,
    JSON,
    REQUEST_TYPES,
    apply_query,
    media_type,
)

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_THREADS = 4
DEFAULT_TIMEOUT_S = 60
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024
# Exit status of gunicorn when the application (here: the model) does not load.
APP_LOAD_ERROR = 4
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
}
_ROUTES = {"/ping": "GET", "/invocations": "POST"}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class RequestError(Exception):
    """A request refused with ``status``; ``message`` says what to fix."""

    def __init__(self, status: int, message: str, headers: Sequence = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def response_type(accept: str | None) -> str:
    """The response media type for an ``Accept`` header (JSON when there is none).

    Types are tried by falling ``q`` (1 when not given), then in the order sent.

    Raises:
        RequestError: 406, the header allows neither JSON nor CSV.
    """
    if not accept or not accept.strip():
        return JSON
    wanted = []
    for position, part in enumerate(accept.split(",")):
        kind, *parameters = part.split(";")
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if kind.strip() and quality > 0:
            wanted.append((-quality, position, kind.strip().lower()))
    ranges = {JSON: JSON, CSV: CSV, "*/*": JSON, "application/*": JSON, "text/*": CSV}
    for _, _, kind in sorted(wanted):
        if kind in ranges:
            return ranges[kind]
    raise RequestError(
        406, f"cannot answer Accept {accept!r}; the endpoint answers {[JSON, CSV]}"
    )


def _content_length(environ: dict[str, Any], limit: int) -> int:
    text = environ.get("CONTENT_LENGTH") or ""
    if not text.strip():
        raise RequestError(
            411, "Content-Length is required (send the body whole, not chunked)"
        )
    try:
        length = int(text)
    except ValueError:
        length = -1
    if length < 0:
        raise RequestError(400, f"Content-Length {text!r} is not a byte count")
    if length > limit:
        raise RequestError(
            413,
            f"request body of {length} bytes is over the limit of {limit} bytes "
            "(split the orders over several requests)",
        )
    return length


class EndpointApp:
    """The WSGI application around a loaded model (``handler.model_fn``'s result)."""

    def __init__(self, model: Any, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        """Serve ``model``; bodies over ``max_body_bytes`` are refused (413)."""
        self.model = model
        self.max_body_bytes = int(max_body_bytes)

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """Answer one request (see the module docstring)."""
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        try:
            content_type, body = self._route(method, path, environ)
            status, headers = 200, [("Content-Type", content_type)]
        except RequestError as exc:
            logger.info("%s %s: %d %s", method, path, exc.status, exc.message)
            status, headers = exc.status, exc.headers
            body = _error_body(exc.status, exc.message)
        except Exception:
            logger.exception("%s %s failed", method, path)
            status, headers = 500, []
            body = _error_body(500, "internal error while scoring; see the server log")
        if status != 200:
            headers = [("Content-Type", JSON), *headers]
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {_REASONS[status]}", headers)
        return [body]

    def _route(
        self, method: str, path: str, environ: dict[str, Any]
    ) -> tuple[str, bytes]:
        if path not in _ROUTES:
            raise RequestError(
                404, f"no resource {path!r}; the endpoint serves {sorted(_ROUTES)}"
            )
        if method != _ROUTES[path]:
            raise RequestError(
                405,
                f"{path} answers {_ROUTES[path]}, not {method}",
                [("Allow", _ROUTES[path])],
            )
        if path == "/ping":
            return JSON, b'{"status": "healthy"}'
        return self._invocations(environ)

    def _invocations(self, environ: dict[str, Any]) -> tuple[str, bytes]:
        from tsa_kedro.features.raw_orders import RawDataError  # noqa: PLC0415
        from tsa_kedro.serving import handler  # noqa: PLC0415
        from tsa_kedro.serving.payload import PayloadError  # noqa: PLC0415

        content_type = environ.get("CONTENT_TYPE")
        if media_type(content_type) not in REQUEST_TYPES:
            raise RequestError(
                415,
                f"unsupported Content-Type {content_type!r}; send one of "
                f"{list(REQUEST_TYPES)}",
            )
        accept = response_type(environ.get("HTTP_ACCEPT"))
        length = _content_length(environ, self.max_body_bytes)
        body = environ["wsgi.input"].read(length) if length else b""
        if len(body) != length:
            raise RequestError(
                400, f"body ended after {len(body)} of {length} bytes (Content-Length)"
            )
        try:
            orders = handler.input_fn(body, content_type)
            apply_query(orders, environ.get("QUERY_STRING"))
            answers = handler.predict_fn(orders, self.model)
            text = handler.output_fn(answers, accept)
        except PayloadError as exc:
            raise RequestError(400, str(exc)) from exc
        except RawDataError as exc:
            raise RequestError(422, str(exc)) from exc
        return accept, text.encode("utf-8")


def _error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode("utf-8")


def load_app(model_dir: str | os.PathLike, max_body_bytes: int) -> EndpointApp:
    """Load the unpacked bundle in ``model_dir`` with ``handler.model_fn``.

    Raises:
        Whatever ``model_fn`` raises (``ManifestError``, ``FileNotFoundError``,
        ``ValueError``...).
    """
    from tsa_kedro.serving import handler  # noqa: PLC0415 - in the worker, not the master

    return EndpointApp(handler.model_fn(str(model_dir)), max_body_bytes)


def unpacked_model(path: Path, workspace: Path) -> Path:
    """The bundle folder for ``path``: a folder as it is, an archive unpacked into
    ``workspace`` (with ``archive.safe_extract``'s checks).

    Raises:
        SystemExit: The path does not exist, or is neither a folder nor a readable
            tar archive.
    """
    from tsa_kedro.serving.archive import safe_extract  # noqa: PLC0415

    if path.is_dir():
        return path
    if not path.is_file():
        raise SystemExit(f"model path {path} does not exist")
    try:
        safe_extract(path, workspace / "model")
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise SystemExit(f"model archive {path} cannot be unpacked: {exc}") from exc
    return workspace / "model"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _env_default(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return _positive_int(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise SystemExit(
            f"environment variable {name}={text!r} is not a positive integer"
        ) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; see the module docstring for every setting."""
    parser = argparse.ArgumentParser(
        prog="python -m tsa_kedro.serving.server",
        description="Serve one model bundle over HTTP (SageMaker inference contract).",
    )
    parser.add_argument(
        "--model",
        type=Path,
        required=True,
        help="model.tar.gz, or the folder it unpacks to",
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument(
        "--port",
        type=int,
        default=_env_default("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT),
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=_env_default("SAGEMAKER_MODEL_SERVER_WORKERS", 1),
    )
    parser.add_argument("--threads", type=_positive_int, default=DEFAULT_THREADS)
    parser.add_argument(
        "--timeout",
        type=_positive_int,
        default=_env_default("SAGEMAKER_MODEL_SERVER_TIMEOUT", DEFAULT_TIMEOUT_S),
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=_env_default("TSA_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
    )
    return parser.parse_args(argv)


def serve(args: argparse.Namespace, model_dir: Path) -> None:
    """Run gunicorn on ``args.host:args.port`` until it is stopped."""
    from gunicorn.app.base import BaseApplication  # noqa: PLC0415
    from gunicorn.errors import AppImportError  # noqa: PLC0415

    options = {
        "bind": f"{args.host}:{args.port}",
        "workers": args.workers,
        "worker_class": "gthread",
        "threads": args.threads,
        "timeout": args.timeout,
        "graceful_timeout": args.timeout,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "tsa-endpoint",
    }
    if Path("/dev/shm").is_dir():  # worker heartbeats off the container's disk
        options["worker_tmp_dir"] = "/dev/shm"

    class Endpoint(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> EndpointApp:
            try:
                return load_app(model_dir, args.max_body_bytes)
            except Exception as exc:
                logger.debug("model load failed", exc_info=True)
                raise AppImportError(
                    f"model bundle {args.model} did not load: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    Endpoint().run()


def main(argv: Sequence[str] | None = None) -> None:
    """Check the model path, unpack an archive, then serve (exits on failure)."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    master = os.getpid()
    workspace = Path(tempfile.mkdtemp(prefix="tsa-endpoint-"))
    try:
        model_dir = unpacked_model(args.model, workspace)
        logger.info("serving %s on %s:%d", args.model, args.host, args.port)
        serve(args, model_dir)
    finally:
        # workers leave through here too (gunicorn forks inside serve)
        if os.getpid() == master:
            shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    main()
