"""Pieces of the upload protocol that need no server: the Range answer and chunk bodies."""

from __future__ import annotations

import io

import pytest
import requests

from debusine.client.errors import UploadError
from debusine.client.uploads import _Slice, received_bytes


def response_with_range(value: str | None) -> requests.Response:
    response = requests.Response()
    response.status_code = 206
    if value is not None:
        response.headers["Range"] = value
    return response


def test_range_answer_is_the_next_offset() -> None:
    assert received_bytes(response_with_range("bytes=0-0")) == 0
    assert received_bytes(response_with_range("bytes=0-40000")) == 40000


@pytest.mark.parametrize("value", [None, "bytes=5-10", "bytes 0-1", "0-1"])
def test_invalid_range_answer(value: str | None) -> None:
    with pytest.raises(UploadError, match="Range"):
        received_bytes(response_with_range(value))


def test_slice_reads_only_its_length_and_reports_progress() -> None:
    contents = io.BytesIO(b"0123456789")
    contents.seek(2)
    progress: list[int] = []
    body = _Slice(contents, 5, progress.append)

    assert len(body) == 5
    assert body.read(3) == b"234"
    assert body.read() == b"56"
    assert body.read() == b""
    assert progress == [3, 2]
