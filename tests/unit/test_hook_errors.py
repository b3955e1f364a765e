"""Every status and body shape of the contract mapped to its typed error, and network faults to request_sent."""

from __future__ import annotations

import asyncio
import email.utils
import json
from unittest import mock

import aiohttp
import pytest
import requests
from airflow.sdk.exceptions import AirflowFailException
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError

from airflow_runway.exceptions import (
    EachlabsAuthError,
    EachlabsConnectionError,
    EachlabsInvalidInputError,
    EachlabsMalformedResponseError,
    EachlabsNotFoundError,
    EachlabsPaymentRequiredError,
    EachlabsPermanentError,
    EachlabsRateLimitError,
    EachlabsRedirectError,
    EachlabsServerError,
    EachlabsTransientError,
)
from airflow_runway.hooks.errors import (
    api_message,
    connection_error_from_aiohttp,
    connection_error_from_requests,
    decode_object,
    error_for_response,
    parse_retry_after,
    prediction_id_from_create,
    snippet,
)

NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def body(value: object) -> bytes:
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


@pytest.mark.parametrize(
    ("status", "payload", "error_class", "message"),
    [
        (400, {"error": "Invalid input for model"}, EachlabsInvalidInputError, "Invalid input for model"),
        (400, {"error": "model field is required"}, EachlabsInvalidInputError, "model field is required"),
        (
            400,
            {"error": "Invalid input for model", "details": "ratio must be 16:9 or 9:16"},
            EachlabsInvalidInputError,
            "Invalid input for model: ratio must be 16:9 or 9:16",
        ),
        (422, {"error": "version field is required"}, EachlabsInvalidInputError, "version field is required"),
        (401, {"error": "Invalid or missing API key"}, EachlabsAuthError, "Invalid or missing API key"),
        (403, {"error": "Forbidden"}, EachlabsAuthError, "Forbidden"),
        (
            402,
            {"status": 402, "error": "payment required", "details": "insufficient balance"},
            EachlabsPaymentRequiredError,
            "payment required: insufficient balance",
        ),
        (404, {"error": "Prediction not found"}, EachlabsNotFoundError, "Prediction not found"),
        (410, {"error": "gone"}, EachlabsNotFoundError, "gone"),
        (409, {"message": "conflict"}, EachlabsInvalidInputError, "conflict"),
        (418, "I'm a teapot", EachlabsInvalidInputError, "HTTP 418 I'm a Teapot: I'm a teapot"),
        (
            429,
            {"status": 429, "error": "too many requests", "details": "too many predictions in flight"},
            EachlabsRateLimitError,
            "too many requests: too many predictions in flight",
        ),
        (
            429,
            {"error": "Rate limit exceeded. Please retry after 60 seconds."},
            EachlabsRateLimitError,
            "Rate limit exceeded. Please retry after 60 seconds.",
        ),
        (500, {"error": "Failed to create prediction"}, EachlabsServerError, "Failed to create prediction"),
        (502, NGINX_502, EachlabsServerError, "HTTP 502 Bad Gateway: 502 Bad Gateway"),
        (503, "", EachlabsServerError, "HTTP 503 Service Unavailable"),
        (504, "upstream   timed\nout", EachlabsServerError, "HTTP 504 Gateway Timeout: upstream timed out"),
        (500, [1, 2], EachlabsServerError, "HTTP 500 Internal Server Error: [1, 2]"),
        (400, {"detail": [{"loc": ["input"], "msg": "bad"}]}, EachlabsInvalidInputError, '[{"loc": ["input"]'),
        (302, "", EachlabsRedirectError, "Eachlabs answered HTTP 302 Found, a redirect without a Location"),
        (101, "", EachlabsMalformedResponseError, "HTTP 101 Switching Protocols"),
    ],
)
def test_every_status_maps_to_its_typed_error_with_the_apis_message(status, payload, error_class, message):
    error = error_for_response(status, body(payload), {})
    assert type(error) is error_class
    assert error.http_status == status
    assert str(error).startswith(message)
    assert error.message == str(error)


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 410, 422])
def test_4xx_are_permanent_and_fail_the_task_without_airflow_retries(status):
    error = error_for_response(status, b"{}", {})
    assert isinstance(error, EachlabsPermanentError)
    assert isinstance(error, AirflowFailException)
    assert not error.transient


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_429_and_5xx_are_transient(status):
    error = error_for_response(status, b"{}", {})
    assert isinstance(error, EachlabsTransientError)
    assert not isinstance(error, AirflowFailException)


@pytest.mark.parametrize("status", [200, 201, 204])
def test_success_is_no_error(status):
    assert error_for_response(status, b"{}", {}) is None


def test_retry_after_in_seconds_on_429_and_5xx():
    limited = error_for_response(429, body({"error": "Rate limit exceeded"}), {"Retry-After": "60"})
    assert limited.retry_after == 60.0
    unavailable = error_for_response(503, b"", {"Retry-After": "2.5"})
    assert unavailable.retry_after == 2.5
    assert error_for_response(429, b"{}", {}).retry_after is None


def test_retry_after_as_http_date():
    now = 1_700_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(30.0)
    error = error_for_response(429, b"{}", {"Retry-After": email.utils.formatdate(usegmt=True)})
    assert error.retry_after is not None and 0 <= error.retry_after <= 1


def test_retry_after_header_lookup_is_case_insensitive():
    headers = requests.structures.CaseInsensitiveDict({"retry-after": "7"})
    assert error_for_response(429, b"{}", headers).retry_after == 7.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("120", 120.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_api_message_shapes():
    assert api_message({"error": "x", "details": {"field": "ratio"}}) == 'x: {"field": "ratio"}'
    assert api_message({"error": {"message": "nested"}}) == "nested"
    assert api_message({"status": 500}) is None
    assert api_message(["error"]) is None
    assert api_message({"error": "x", "details": ""}) == "x"


def test_snippet_is_short_and_on_one_line():
    text = snippet(b"a \n\t b" + b"x" * 1000)
    assert text.startswith("a b") and len(text) == 200 and text.endswith("...")
    assert snippet(b"\xff\xfe") == "\ufffd\ufffd"


@pytest.mark.parametrize(
    "raw",
    [b"", b"<html>oops</html>", b'{"status": "success", "predictionID": ', b"[1, 2]", b'"text"', b"null"],
)
def test_a_success_body_that_is_not_a_json_object_is_malformed(raw):
    with pytest.raises(EachlabsMalformedResponseError) as caught:
        decode_object(raw, 200)
    assert caught.value.transient
    assert "HTTP 200" in str(caught.value)


def test_decode_object_returns_the_object():
    assert decode_object(b'{"status": "success"}', 200) == {"status": "success"}


def test_create_answer_without_prediction_id_is_malformed():
    with pytest.raises(EachlabsMalformedResponseError, match="without a predictionID"):
        prediction_id_from_create({"status": "success", "message": "Prediction created successfully"})
    with pytest.raises(EachlabsMalformedResponseError):
        prediction_id_from_create({"predictionID": "  "})
    with pytest.raises(EachlabsMalformedResponseError):
        prediction_id_from_create({"predictionID": True})
    assert prediction_id_from_create({"predictionID": "abc"}) == "abc"
    assert prediction_id_from_create({"predictionID": 42}) == "42"


def test_the_key_is_redacted_when_a_body_echoes_it():
    key = "sk-live-0123456789"
    error = error_for_response(401, body({"error": f"Invalid API key {key}"}), {}, secret=key)
    assert key not in str(error) and "***" in str(error)
    with pytest.raises(EachlabsMalformedResponseError) as malformed:
        decode_object(f"<p>{key}</p>".encode(), 200, secret=key)
    assert key not in str(malformed.value)
    with pytest.raises(EachlabsMalformedResponseError) as caught:
        prediction_id_from_create({"echo": key}, secret=key)
    assert key not in str(caught.value)


# ---- network faults -----------------------------------------------------------------------------------------


def _refused() -> requests.ConnectionError:
    reason = NewConnectionError(mock.Mock(), "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.ConnectionError(MaxRetryError(mock.Mock(), "/v1/prediction/", reason))


@pytest.mark.parametrize(
    ("error", "request_sent"),
    [
        (_refused(), False),
        (requests.exceptions.ConnectTimeout("connect timed out"), False),
        (requests.ReadTimeout(ReadTimeoutError(mock.Mock(), "/", "Read timed out.")), True),
        (requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))), True),
        (requests.exceptions.ChunkedEncodingError("Connection broken"), True),
        (requests.ConnectionError("no details"), True),
    ],
)
def test_requests_faults_know_whether_the_request_was_sent(error, request_sent):
    mapped = connection_error_from_requests(error)
    assert isinstance(mapped, EachlabsConnectionError)
    assert mapped.request_sent is request_sent
    assert mapped.transient
    assert type(error).__name__ in str(mapped)


@pytest.mark.parametrize(
    ("error", "request_sent"),
    [
        (aiohttp.ClientConnectorError(mock.Mock(host="h", port=1, ssl=True), ConnectionRefusedError(111, "no")), False),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), True),
        (aiohttp.ClientPayloadError("Response payload is not completed"), True),
        (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), True),
        (asyncio.TimeoutError(), True),
    ],
)
def test_aiohttp_faults_know_whether_the_request_was_sent(error, request_sent):
    mapped = connection_error_from_aiohttp(error)
    assert isinstance(mapped, EachlabsConnectionError)
    assert mapped.request_sent is request_sent
    assert str(mapped)


@pytest.mark.skipif(not hasattr(aiohttp, "ConnectionTimeoutError"), reason="aiohttp < 3.10")
def test_aiohttp_connect_timeout_means_not_sent():
    assert connection_error_from_aiohttp(aiohttp.ConnectionTimeoutError()).request_sent is False


def test_http_status_leaves_airflows_own_status_code_alone():
    from http import HTTPStatus

    error = EachlabsServerError("x", status_code=503)
    assert error.http_status == 503
    assert error.status_code is HTTPStatus.INTERNAL_SERVER_ERROR  # AirflowException's, for Airflow's REST API
    assert EachlabsConnectionError("refused", request_sent=False).http_status is None


def test_network_fault_messages_are_redacted():
    key = "sk-live-0123456789"
    assert key not in str(connection_error_from_requests(requests.ConnectionError(f"bad {key}"), secret=key))
    assert key not in str(connection_error_from_aiohttp(aiohttp.ClientOSError(1, f"bad {key}"), secret=key))
