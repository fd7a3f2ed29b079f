"""Pieces of the upload protocol that need no server: the Range answer and chunk bodies."""

from __future__ import annotations

import io

import pytest
import requests

from debusine.client import uploads
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


def test_slice_reads_only_its_length_and_reports_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(uploads, "SEND_BLOCK_SIZE", 3)
    contents = io.BytesIO(b"0123456789")
    contents.seek(2)
    progress: list[int] = []
    body = _Slice(contents, 5, progress.append)

    assert len(body) == 5
    # An iterable, not a file: urllib3 sends each block whole.
    assert not hasattr(body, "read")
    assert list(body) == [b"234", b"56"]
    assert progress == [3, 2]
    assert contents.read() == b"789"


def test_slice_of_a_file_shorter_than_announced_fails() -> None:
    body = _Slice(io.BytesIO(b"0123"), 5, lambda _: None)
    with pytest.raises(UploadError, match="shorter"):
        list(body)
