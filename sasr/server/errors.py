"""Every error leaves the server in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from sasr.protocol import ErrorBody, ErrorCode, ErrorResponse

log = logging.getLogger("sasr")

_STATUS_CODES = {
    400: ErrorCode.INVALID_VALUE,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.FILE_TOO_LARGE,
}


class APIError(Exception):
    """A request the server refuses, with the status and OpenAI error fields to send back."""

    def __init__(
        self, status: int, message: str, code: ErrorCode, param: str | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}


class ClientGone(Exception):
    """The client closed the connection before the response was ready."""


def error_response(status: int, message: str, code: str, param: str | None = None, headers=None) -> Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = ErrorResponse(ErrorBody(message=message, type=kind, param=param, code=code))
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json", headers=headers)


def _metrics(request: Request):
    return request.app.state.metrics


def handle_api_error(request: Request, exc: APIError) -> Response:
    _metrics(request).inc("sasr_errors_total", help="Requests refused, by error code", code=exc.code.value)
    return error_response(exc.status, exc.message, exc.code.value, exc.param, exc.headers)


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    code = _STATUS_CODES.get(exc.status_code, ErrorCode.INVALID_VALUE if exc.status_code < 500 else ErrorCode.INTERNAL_ERROR)
    _metrics(request).inc("sasr_errors_total", help="Requests refused, by error code", code=code.value)
    return error_response(exc.status_code, str(exc.detail), code.value, headers=exc.headers)


def handle_client_gone(request: Request, exc: Exception) -> Response:
    _metrics(request).inc("sasr_client_disconnects_total", help="Requests abandoned by their client")
    return error_response(499, "client closed the request", "client_closed_request")  # nobody reads it


def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    _metrics(request).inc("sasr_errors_total", help="Requests refused, by error code", code="internal_error")
    return error_response(500, "internal server error", ErrorCode.INTERNAL_ERROR.value)


EXCEPTION_HANDLERS = {
    APIError: handle_api_error,
    HTTPException: handle_http_exception,
    ClientGone: handle_client_gone,
    Exception: handle_unexpected,
}
