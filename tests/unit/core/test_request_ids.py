"""Client request ids: bounded and printable, refused naming `id` without echoing them whole."""

from __future__ import annotations

import pytest

from telescore.core.requests import (
    ID_FIELD,
    MAX_ID_LENGTH,
    InvalidRequestError,
    check_request_id,
)


@pytest.mark.parametrize(
    "request_id",
    [
        "r",
        "a" * MAX_ID_LENGTH,
        "batch 7 / prospect 42",
        "550e8400-e29b-41d4-a716-446655440000",
        "~!@#$%^&*()_+{}|:<>?`-=[]\\;',./\"",
    ],
    ids=["one character", "at the limit", "spaces", "a UUID", "ASCII punctuation"],
)
def test_printable_ids_up_to_the_limit_are_accepted(request_id: str) -> None:
    # Given a printable ASCII id of at most 128 characters / When checked / Then it passes
    try:
        check_request_id(request_id)
    except InvalidRequestError as error:
        pytest.fail(f"refused a valid id {request_id!r}: {error}")


@pytest.mark.parametrize("request_id", ["a" * 129, "é" * 129])
def test_an_id_over_the_limit_is_refused_naming_the_limit(request_id: str) -> None:
    # Given an id one character over the limit / When checked
    with pytest.raises(InvalidRequestError) as caught:
        check_request_id(request_id)

    # Then it is refused, naming the `id` field and the limit
    message = str(caught.value)
    assert caught.value.field == ID_FIELD == "id", f"wrong field: {caught.value.field}"
    assert "'id'" in message, f"the message must name the field: {message}"
    assert "128" in message, f"the message must name the limit: {message}"


@pytest.mark.parametrize(
    "request_id",
    ["line\nbreak", "carriage\rreturn", "nul\x00byte", "\x00", "tab\there", "escape\x1b[31m"],
    ids=["newline", "carriage return", "NUL", "only NUL", "tab", "ANSI escape"],
)
def test_control_characters_are_refused(request_id: str) -> None:
    # Given an id holding a control character (it would end up in logs and response headers)
    # When checked
    with pytest.raises(InvalidRequestError) as caught:
        check_request_id(request_id)

    # Then it is refused, naming the `id` field, and the message holds no raw control character
    message = str(caught.value)
    assert caught.value.field == "id", f"wrong field: {caught.value.field}"
    assert "'id'" in message, f"the message must name the field: {message}"
    assert message.isprintable(), f"the message echoes a raw control character: {message!r}"


@pytest.mark.parametrize("request_id", ["Zürich", "東京", "thumbs 👍", "é"])
def test_anything_but_ascii_is_refused(request_id: str) -> None:
    # Given an id with a non-ASCII character (MLServer echoes the id in a Latin-1 header, where
    # most of these cannot go, after the prediction is journaled)
    # When checked / Then it is refused before scoring, naming `id`
    with pytest.raises(InvalidRequestError) as caught:
        check_request_id(request_id)
    assert caught.value.field == "id", f"wrong field: {caught.value.field}"


@pytest.mark.parametrize(
    "request_id",
    ["x" * 100_000, "x" * 100 + "\n", "x" * 100_000 + "\n"],
    ids=["huge", "unprintable, under the limit", "huge and unprintable"],
)
def test_messages_never_echo_a_long_id(request_id: str) -> None:
    # Given a long id / When it is refused
    with pytest.raises(InvalidRequestError) as caught:
        check_request_id(request_id)

    # Then the message quotes at most about 60 characters of it
    message = str(caught.value)
    assert "x" * 61 not in message, f"the message echoes too much of the id: {len(message)} chars"
    assert len(message) < 200, f"the message is too long: {len(message)} characters"
