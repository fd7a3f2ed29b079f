"""Read a `.deb`'s control fields from its first bytes: an `ar` archive whose second member
is `control.tar.{gz,xz,zst}` (or uncompressed), as dpkg-deb(1) describes."""

from __future__ import annotations

import io
import subprocess
import tarfile
from typing import BinaryIO

AR_MAGIC = b"!<arch>\n"
AR_HEADER_SIZE = 60


class DebError(Exception):
    """Not a readable Debian binary package."""


def ar_members(stream: BinaryIO) -> dict[str, bytes]:
    """The members of an `ar` archive up to and including its control archive."""
    if stream.read(len(AR_MAGIC)) != AR_MAGIC:
        raise DebError("not an ar archive")
    members: dict[str, bytes] = {}
    while True:
        header = stream.read(AR_HEADER_SIZE)
        if len(header) < AR_HEADER_SIZE:
            return members
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise DebError("bad ar member header") from None
        data = stream.read(size)
        if len(data) < size:
            raise DebError(f"ar member {name} is cut short")
        if size % 2:
            stream.read(1)
        members[name] = data
        if name.startswith("control.tar"):
            return members


def decompress(name: str, data: bytes) -> bytes:
    if name == "control.tar.zst":
        try:
            return subprocess.run(
                ["zstd", "-dc"], input=data, capture_output=True, check=True, timeout=30
            ).stdout
        except (OSError, subprocess.SubprocessError) as error:
            raise DebError(f"cannot decompress {name}: {error}") from None
    return data


def deb_control(stream: BinaryIO) -> list[tuple[str, str]]:
    """The fields of the package's `control` file, in order."""
    members = ar_members(stream)
    names = [name for name in members if name.startswith("control.tar")]
    if not names or not members.get("debian-binary", b"").startswith(b"2."):
        raise DebError("no debian-binary 2.x and control archive: not a .deb")
    name = names[0]
    try:
        with tarfile.open(fileobj=io.BytesIO(decompress(name, members[name]))) as archive:
            member = next(
                (m for m in archive.getmembers() if m.name in ("./control", "control")), None
            )
            extracted = archive.extractfile(member) if member is not None else None
            if extracted is None:
                raise DebError("the control archive has no control file")
            text = extracted.read(1024 * 1024).decode("utf-8", "replace")
    except tarfile.TarError as error:
        raise DebError(f"unreadable {name}: {error}") from None
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and fields:
            key, value = fields[-1]
            fields[-1] = (key, value + "\n" + line)
        elif ":" in line:
            key, _, value = line.partition(":")
            fields.append((key.strip(), value.strip()))
    return fields
