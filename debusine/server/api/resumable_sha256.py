"""
A SHA-256 whose state can be saved between requests and resumed: what lets a resumable upload
be hashed while it is written, once, however many requests carry it.

`hashlib` cannot export a hash's state, so this drives OpenSSL's `SHA256_Init` /
`SHA256_Update` / `SHA256_Final` (the library Python's own hashlib uses) through ctypes on a
`SHA256_CTX` it owns: that structure (eight state words, the bit count, the pending block and
two counters, 112 bytes) is plain data, so its bytes are the state. `SHA256_Update` runs
OpenSSL's optimised code without the GIL. The saved state is only ever read back on the machine
that wrote it (partial uploads live in its DEBUSINE_UPLOAD_DIRECTORY).

When the OpenSSL library or those functions cannot be found (a build without the deprecated
low-level API), `available()` is False: states cannot be saved, and a resumed upload is hashed
again from the bytes on disk (correct, one more read).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from functools import cache

#: sizeof(SHA256_CTX).
STATE_SIZE = 112
#: Saved states start with this, so that a state of another layout is never resumed.
STATE_MAGIC = b"sha256-openssl-ctx-1:"


@cache
def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
        functions = (library.SHA256_Init, library.SHA256_Update, library.SHA256_Final)
    except (OSError, AttributeError):
        return None
    for function in functions:
        function.restype = ctypes.c_int
    library.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    # Trust it only once it gives hashlib's answer, across a save and a restore.
    probe = ResumableSha256(_library_override=library)
    probe.update(b"a" * 100)
    resumed = ResumableSha256.from_state(probe.state(), _library_override=library)
    resumed.update(b"b" * 30)
    if resumed.digest() != hashlib.sha256(b"a" * 100 + b"b" * 30).digest():
        return None
    return library


def available() -> bool:
    """Whether hash states can be saved and resumed on this machine."""
    return _library() is not None


class ResumableSha256:
    """SHA-256 of a stream, whose `state()` can be stored and resumed with `from_state`."""

    def __init__(self, *, _library_override: ctypes.CDLL | None = None) -> None:
        library = _library_override or _library()
        if library is None:
            raise RuntimeError("OpenSSL's SHA256 functions are not available")
        self._lib = library
        self._context = ctypes.create_string_buffer(STATE_SIZE)
        if self._lib.SHA256_Init(self._context) != 1:
            raise RuntimeError("SHA256_Init failed")

    @classmethod
    def from_state(
        cls, state: bytes, *, _library_override: ctypes.CDLL | None = None
    ) -> ResumableSha256:
        """A hash resumed from `state()`; ValueError if `state` is not one."""
        if len(state) != len(STATE_MAGIC) + STATE_SIZE or not state.startswith(STATE_MAGIC):
            raise ValueError("not a saved SHA-256 state")
        resumed = cls(_library_override=_library_override)
        ctypes.memmove(resumed._context, state[len(STATE_MAGIC) :], STATE_SIZE)
        return resumed

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash `data` next (bytes are read in place, as are writable buffers)."""
        length = memoryview(data).nbytes
        if not length:
            return
        pointer: bytes | ctypes.Array[ctypes.c_char]
        if isinstance(data, bytes):
            pointer = data
        elif isinstance(data, bytearray) or not memoryview(data).readonly:
            pointer = (ctypes.c_char * length).from_buffer(data)
        else:
            pointer = bytes(data)
        if self._lib.SHA256_Update(self._context, pointer, length) != 1:
            raise RuntimeError("SHA256_Update failed")

    def state(self) -> bytes:
        """The state after the bytes so far, to store and resume later."""
        return STATE_MAGIC + self._context.raw

    def digest(self) -> bytes:
        """The SHA-256 of the bytes so far (the hash can go on being updated)."""
        copy = ctypes.create_string_buffer(self._context.raw, STATE_SIZE)
        output = ctypes.create_string_buffer(32)
        if self._lib.SHA256_Final(output, copy) != 1:
            raise RuntimeError("SHA256_Final failed")
        return output.raw
