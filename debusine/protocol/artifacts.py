"""
Wire models of the artifact API: creating artifacts, the Artifact object, and relations.

Request models are strict (`extra="forbid"`, no type coercion of numbers and strings) so that a
malformed request is refused with a precise error instead of being half-understood. Response
models accept unknown keys, as Debusine clients do, so the server may add fields.
`LenientArtifactResponse` is what our client and worker accept from any compatible server
(Debusine 0.11 sends no `url`, 0.11 and 0.12 no `scope`).
"""

from __future__ import annotations

import re
import string
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
)

from debusine.protocol.wire import LENIENT, StrictRequest

#: Longest artifact-relative path we store (FileInArtifact.path).
MAX_PATH_LENGTH = 500

#: Largest file size we can record (a signed 64-bit integer in the database).
MAX_FILE_SIZE = 2**63 - 1

#: Characters kept as they are when a path goes into a download URL: unreserved characters
#: and the sub-delimiters that are legal in a URL path. Everything else (spaces, `%`, `?`, `#`,
#: non-ASCII, ...) is percent-encoded, so that the URL is valid and names exactly this path.
URL_PATH_SAFE_CHARACTERS = "/:@!$&'()*+,;=~"

_HEX_DIGITS = frozenset(string.hexdigits.lower())


class ArtifactRelationType(StrEnum):
    """How an artifact relates to another one."""

    EXTENDS = "extends"
    RELATES_TO = "relates-to"
    BUILT_USING = "built-using"


def check_artifact_path(path: str) -> str:
    """
    Return `path` if it is a safe artifact-relative path; raise ValueError otherwise.

    Files are later written under a directory at these paths (downloads, tarballs, workers
    unpacking inputs), so anything that could escape that directory or be read differently
    by another tool is refused rather than normalised.
    """
    if not path:
        raise ValueError("file path must not be empty")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"file path {path!r} is longer than {MAX_PATH_LENGTH} characters")
    if path.startswith("/"):
        raise ValueError(f"file path {path!r} must be relative")
    if "\\" in path:
        raise ValueError(f"file path {path!r} must not contain backslashes")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        raise ValueError(f"file path {path!r} must not contain control characters or NUL")
    for component in path.split("/"):
        if component == "":
            raise ValueError(f"file path {path!r} must not contain empty components")
        if component in (".", ".."):
            raise ValueError(f"file path {path!r} must not contain {component!r} components")
    return path


def quote_artifact_path(path: str) -> str:
    """
    Quote `path` for a download URL, changing only what would make the URL invalid.

    Ordinary Debian file names (`hello_1.0-1+b1_amd64.deb`, `a/b~c.log`) stay unchanged, as
    Debusine emits them.
    """
    return quote(path, safe=URL_PATH_SAFE_CHARACTERS)


def _check_sha256_hex(checksums: dict[str, str]) -> dict[str, str]:
    sha256 = checksums.get("sha256")
    if sha256 is None:
        raise ValueError("checksums must include 'sha256'")
    if len(sha256) != 64 or not set(sha256.lower()) <= _HEX_DIGITS:
        raise ValueError("checksums.sha256 must be 64 hexadecimal characters")
    return checksums


#: `[D [days, ]][[HH:]MM:]SS[.ffffff]`, the duration format Debusine servers (Django) print.
_CLOCK_DURATION = re.compile(
    r"^(?:(?P<days>\d+) (?:days?,? )?)?"
    r"(?:(?:(?P<hours>\d+):)?(?P<minutes>\d+):)?"
    r"(?P<seconds>\d+(?:\.\d{1,6})?)$"
)
_ISO_DURATION = TypeAdapter(timedelta)

#: Longest expiration delay accepted: beyond it, creation time plus delay overflows dates.
MAX_DURATION = timedelta(days=365 * 1000)


def parse_duration(value: Any) -> Any:
    """Parse a duration string (`"7 00:00:00"`, `"3600"`, ISO 8601 `"P7D"`) into a timedelta."""
    if value is None or isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a duration string or null")
    match = _CLOCK_DURATION.match(value.strip())
    if match is not None:
        try:
            duration = timedelta(
                days=int(match["days"] or 0),
                hours=int(match["hours"] or 0),
                minutes=int(match["minutes"] or 0),
                seconds=float(match["seconds"]),
            )
        except OverflowError:
            raise ValueError(f"must be at most {MAX_DURATION.days} days") from None
    else:
        duration = _ISO_DURATION.validate_python(value)
    if duration < timedelta(0):
        raise ValueError("must not be negative")
    if duration > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION.days} days")
    return duration


ArtifactPath = Annotated[str, AfterValidator(check_artifact_path)]
Checksums = Annotated[
    dict[StrictStr, Annotated[StrictStr, Field(max_length=255)]],
    AfterValidator(_check_sha256_hex),
]
Duration = Annotated[timedelta | None, BeforeValidator(parse_duration)]


class FileRequest(StrictRequest):
    """One file of an artifact being created: what it will contain, not the contents."""

    size: Annotated[StrictInt, Field(ge=0, le=MAX_FILE_SIZE)]
    checksums: Checksums
    type: Literal["file"]
    content_type: Annotated[StrictStr, Field(max_length=255)] | None = None

    @property
    def sha256(self) -> bytes:
        return bytes.fromhex(self.checksums["sha256"])


class ArtifactCreateRequest(StrictRequest):
    """Body of `POST /api/1.0/artifact/`."""

    category: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    workspace: StrictStr | None = None
    files: dict[ArtifactPath, FileRequest]
    data: dict[str, Any]
    work_request: StrictInt | None = None
    # Debusine clients send it; Debusine servers ignore it, and so do we.
    expire_at: datetime | None = None
    expiration_delay: Duration = None


def _check_absolute_url(url: str) -> str:
    """Refuse what Debusine clients' AnyUrl refuses: relative URLs and whitespace."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an absolute http(s) URL")
    if any(char.isspace() for char in url):
        raise ValueError(f"{url!r} contains whitespace")
    return url


AbsoluteUrl = Annotated[str, AfterValidator(_check_absolute_url)]


class FileResponse(BaseModel):
    """One file in the Artifact object."""

    size: Annotated[int, Field(ge=0)]
    checksums: dict[str, Annotated[str, Field(max_length=255)]]
    type: Literal["file"]
    url: AbsoluteUrl
    content_type: str | None = None


class ArtifactResponse(BaseModel):
    """The Artifact object returned by artifact creation and retrieval."""

    id: int
    url: str
    scope: str
    workspace: str
    category: str
    data: dict[str, Any]
    created_at: datetime
    expire_at: datetime | None = None
    download_tar_gz_url: AbsoluteUrl
    files_to_upload: list[str]
    files: dict[str, FileResponse] = {}
    #: `self`, `webui_self` and `download_tar_gz` (`{href, type}`), for Debusine 0.16 clients.
    links: dict[str, Any] = {}


class LenientArtifactResponse(ArtifactResponse):
    """The Artifact object as our client and worker read it from any compatible server."""

    model_config = LENIENT

    # Widened on purpose (see the module docstring): Debusine servers may leave them out.
    url: str | None = None  # type: ignore[assignment]
    scope: str | None = None  # type: ignore[assignment]


class RelationCreateRequest(StrictRequest):
    """Body of `POST /api/1.0/artifact-relation/`."""

    artifact: StrictInt
    target: StrictInt
    type: ArtifactRelationType


class RelationResponse(BaseModel):
    """A relation between two artifacts."""

    id: int
    artifact: int
    target: int
    type: ArtifactRelationType
