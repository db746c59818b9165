"""Form bodies: URL-encoded fields and streamed multipart uploads.

Multipart parsing is delegated to the ``multipart`` package's ``PushMultipartParser``, a sans-IO parser that
yields events (a segment's headers, chunks of its body, its end) as bytes arrive. We read the request body in
64 KiB blocks and write each file's chunks straight into a ``SpooledTemporaryFile``, which stays in memory
while small and moves to disk past ``spool_size``: a 1 GiB upload never sits in memory. Text fields are small
by nature and are kept as strings, with their own size limit.

Every parse failure becomes an ``HTTPError``: 400 for malformed input, 413 for input over a limit. Nothing a
client sends can turn into a 500 here.
"""

from __future__ import annotations

import codecs
import logging
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO
from urllib.parse import parse_qsl, unquote_to_bytes

from multipart import MultipartError, MultipartSegment, ParserLimitReached, PushMultipartParser

from .datastructures import MultiDict
from .errors import HTTPError

READ_BLOCK = 64 * 1024
# Text codecs that are not character sets: they decode Python string escapes ("\\x41", "\\N{...}").
# A file name's longest form from safe_filename: well under the 255 bytes most file systems allow in one name,
# leaving room for the ".NAME.XXXXXXXX.part" of save()'s temporary file.
SAFE_NAME_BYTES = 200
# Unicode categories safe_filename removes: controls, format characters (bidi overrides, zero widths), line and
# paragraph separators, and lone surrogates (which no file system encoding can write). Except the zero-width
# joiner and non-joiner, which belong to words (Persian) and emoji (a family is three joined by ZWJ).
UNSAFE_IN_NAMES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
JOINERS = frozenset("\u200c\u200d")

_NOT_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape"})
# What a 400 for a body the parser cannot read says. The parser's own text is for whoever debugs the client (it is
# logged at debug level): it names its internals, and can carry the repr of another exception inside
# ("('Segment header failed to decode', UnicodeDecodeError(...))"), which is no message for a page.
MALFORMED_MULTIPART = "Malformed multipart body: the form data is not valid multipart/form-data"

log = logging.getLogger("framework")


class UploadedFile:
    """One uploaded file: where it came from (``filename``, ``content_type``) and its bytes in ``stream``.

    ``filename`` is what the client sent and must not be trusted as a path; ``safe_filename`` is a version
    that is safe to join to a directory. The stream is positioned at the start and is closed with the request.
    """

    def __init__(
        self, field: str, filename: str, content_type: str, headers: list[tuple[str, str]], spool_size: int
    ) -> None:
        self.field = field
        self.filename = filename
        self.content_type = content_type
        self.headers = headers
        self.size = 0
        # Owned by this object and closed by close(), when the request ends: no context manager can span that.
        self.stream: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=spool_size)

    @property
    def safe_filename(self) -> str:
        """The client's file name reduced to a plain base name: no directories, no control or format characters,
        no leading dots, at most ``SAFE_NAME_BYTES`` bytes of UTF-8; ``"upload"`` when nothing usable is left.

        Format characters go too: a right-to-left override makes ``invoice\u202egpj.exe`` read as
        ``invoiceexe.jpg`` in a listing. The length is cut (keeping the extension) because a name the file
        system refuses would fail the save with a 500, for any client who sends one."""
        name = unicodedata.normalize("NFKC", self.filename).replace("\\", "/").rsplit("/", 1)[-1]
        name = "".join(c for c in name if c in JOINERS or unicodedata.category(c) not in UNSAFE_IN_NAMES)
        while name != (trimmed := name.strip().lstrip(".")):  # ". .bashrc" is a dotfile too
            name = trimmed
        return _shortened(name, SAFE_NAME_BYTES) or "upload"

    def read(self, size: int = -1) -> bytes:
        """Read from the uploaded bytes (the stream starts at the beginning)."""
        return self.stream.read(size)

    def save(self, destination: str | os.PathLike[str]) -> int:
        """Copy the upload to ``destination`` and answer the number of bytes written.

        The bytes land in a temporary file next to the destination that is renamed into place only once
        complete, so a reader never sees half a file and a failure leaves nothing behind.
        """
        target = Path(destination)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                self.stream.seek(0)
                shutil.copyfileobj(self.stream, out, READ_BLOCK)
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
        finally:
            self.stream.seek(0)
        return self.size

    def close(self) -> None:
        """Release the temporary file; the request does this for every upload when it ends."""
        self.stream.close()

    def __repr__(self) -> str:
        return f"<UploadedFile {self.field}={self.filename!r} {self.content_type} {self.size} bytes>"


def _shortened(name: str, limit: int) -> str:
    """``name`` cut to ``limit`` bytes of UTF-8, its extension kept (when it has a short one) and no character
    cut in half."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = f".{extension}" if dot and stem and len(extension.encode()) <= 16 else ""
    if not suffix:
        stem = name
    room = limit - len(suffix.encode())
    return stem.encode()[:room].decode("utf-8", "ignore").rstrip() + suffix


def parse_urlencoded(body: bytes, max_fields: int) -> MultiDict:
    """``a=1&b=2`` into a MultiDict; invalid UTF-8 answers 400, more than ``max_fields`` fields 413 (as too
    many multipart parts do).

    Browsers percent-encode everything but ASCII; ``curl -d name=Zoë`` sends the UTF-8 bytes as they are, and
    both spellings are read alike.
    """
    if body.count(b"&") >= max_fields:
        raise HTTPError(413, f"The form has more than {max_fields} fields")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as error:
        raise HTTPError(400, f"Malformed form data: {error}") from error
    return MultiDict(pairs)


def parse_multipart(
    read: Callable[[int], bytes],
    boundary: str,
    content_length: int,
    *,
    spool_size: int,
    max_field_size: int,
    max_parts: int,
) -> tuple[MultiDict, MultiDict]:
    """Stream a ``multipart/form-data`` body into (fields, files).

    ``read(n)`` returns up to ``n`` bytes of the body (``b""`` at its end); ``content_length`` is -1 when
    unknown. Fields become strings; files become ``UploadedFile`` objects spooled to disk past ``spool_size``.
    """
    fields, files = MultiDict(), MultiDict()
    opened: list[UploadedFile] = []
    segment: MultipartSegment | None = None
    upload: UploadedFile | None = None
    text = bytearray()
    try:
        parser = PushMultipartParser(boundary, content_length, max_segment_count=max_parts)
        for event in parser.parse_blocking(read, READ_BLOCK):
            if isinstance(event, MultipartSegment):
                segment, text = event, bytearray()
                upload = None
                filename = _filename(event)
                if filename is not None:
                    content_type = event.content_type or "application/octet-stream"
                    upload = UploadedFile(event.name, filename, content_type, event.headerlist, spool_size)
                    opened.append(upload)
                continue
            if segment is None:  # the parser reports a part's headers before any of its body or its end
                raise RuntimeError("multipart parser sent a part's body before its headers")
            if event:
                if upload is not None:
                    upload.stream.write(event)
                    upload.size += len(event)
                else:
                    text += event
                    if len(text) > max_field_size:
                        raise HTTPError(413, f"Form field {segment.name!r} is larger than {max_field_size} bytes")
            elif upload is not None:
                upload.stream.seek(0)
                files.add(upload.field, upload)
            else:
                fields.add(segment.name, _decode_field(text, segment.charset))
    except ParserLimitReached as error:
        _close_all(opened)
        raise HTTPError(413, f"Multipart body over a limit: {error}") from error
    except MultipartError as error:  # a field that cannot be decoded is refused by _decode_field
        _close_all(opened)
        log.debug("malformed multipart body: %r", error)
        raise HTTPError(400, MALFORMED_MULTIPART) from error
    except BaseException:
        _close_all(opened)
        raise
    return fields, files


def _filename(segment: MultipartSegment) -> str | None:
    """The file name of a part, or None for a text field.

    ``filename*`` (RFC 8187: ``filename*=UTF-8''%E2%82%AC.txt``) is read first, as RFC 6266 asks, since it is
    the one that can carry any character (``filename`` beside it is for recipients that cannot read it). Browsers
    never send it, other clients do; the ``multipart`` package does not read it, so without this such a file
    arrived as a text field. Continuations (``filename*0*=``) are not HTTP's (RFC 7578 4.2) and are not read.

    ``filename`` is the fallback (RFC 6266 4.3): a ``filename*`` that cannot be read (not
    ``charset'language'name``, an unknown charset, bytes invalid in it) gives way to a plain ``filename`` beside
    it. Only when it is the part's only name is it refused, with 400, as a text field in an unknown charset is.
    """
    plain: str | None = segment.filename  # (the multipart package has no type hints)
    disposition: str = segment.header("Content-Disposition", "")
    if "*" not in disposition:  # The usual part pays for one scan of its header, no more.
        return plain
    try:
        extended = _extended_filename(disposition)
    except ValueError as error:
        if plain is not None:
            return plain
        raise HTTPError(400, f"Malformed multipart body: {error}, and the part has no plain filename") from error
    return plain if extended is None else extended


def _parameters(disposition: str) -> Iterator[tuple[str, str]]:
    """The ``(name, value)`` parameters of a Content-Disposition header after its type, names lower-case; a
    quoted value without its quotes.

    Quoted text is never taken for a parameter (``name="x; filename*=..."`` merely mentions one): escaped
    backslashes are dropped, then escaped quotes, and splitting at the quotes that are left alternates the text
    outside quotes (even pieces, split at ``;``) and inside (odd pieces, which belong to the parameter being
    read). Each parameter's fragments are joined once at its end, so this is linear in the header, which the
    client wrote, whatever its mix of quotes and semicolons (``+=`` on a list's item would copy it each time).
    """
    unescaped = disposition.replace("\\\\", "").replace('\\"', "")
    parameters: list[list[str]] = [[]]
    for index, piece in enumerate(unescaped.split('"')):
        if index % 2:  # inside quotes: kept whole, quotes and all, in the parameter being read
            parameters[-1] += ('"', piece, '"')
            continue
        first, *others = piece.split(";")
        parameters[-1].append(first)
        parameters.extend([other] for other in others)
    for fragments in parameters[1:]:  # the first is the type, "form-data"
        name, _, value = "".join(fragments).partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        yield name.strip().lower(), value


def _extended_filename(disposition: str) -> str | None:
    """The decoded ``filename*`` parameter of a Content-Disposition header, or None when it has none; ValueError
    saying why when it cannot be read.

    RFC 8187 has the value bare (``filename*=UTF-8''%E2%82%AC.txt``); some clients quote it, and one surrounding
    pair of quotes is taken off, as the value means the same either way.
    """
    for name, value in _parameters(disposition):
        if name == "filename*":
            charset, tick, rest = value.partition("'")
            _language, second_tick, encoded = rest.partition("'")
            if not (charset and tick and second_tick):
                raise ValueError("the file name (filename*) is not charset'language'name (RFC 8187)")
            try:
                return _decode_text(unquote_to_bytes(encoded), charset)
            except ValueError as error:
                raise ValueError(f"the file name (filename*) cannot be read as {charset!r}: {error}") from error
    return None


def _decode_field(data: bytes | bytearray, charset: str | None) -> str:
    """A text field's value in the charset its part names (UTF-8 if none); 400 if it cannot be read in it.

    The charset is the client's choice, so every way ``decode`` can fail is the client's fault: an unknown
    name or one of a bytes-to-bytes codec (LookupError), bytes invalid in it (UnicodeDecodeError), the
    "undefined" codec (a bare UnicodeError) and a NUL byte in the name (ValueError, of which the other
    two are subclasses). The escape codecs are refused too: they interpret backslashes in the client's bytes
    and warn (DeprecationWarning) on unknown escapes, which an application running with ``-W error`` would
    see as an exception.
    """
    try:
        return _decode_text(data, charset)
    except ValueError as error:
        raise HTTPError(400, f"Malformed multipart body: a field cannot be read as {charset!r}: {error}") from error


def _decode_text(data: bytes | bytearray, charset: str | None) -> str:
    """``data`` decoded in ``charset`` (UTF-8 if None); ValueError for any way that fails (see ``_decode_field``)."""
    try:
        if charset is not None and codecs.lookup(charset).name in _NOT_CHARSETS:
            raise LookupError(f"{charset!r} reads Python escapes, it is not a charset")
        text = data.decode(charset or "utf-8")
        # UTF-7 can decode to a lone surrogate, which no later encode (a CSRF check, a database) could take.
        text.encode("utf-8")
        return text
    except LookupError as error:
        raise ValueError(str(error)) from error


def _close_all(uploads: list[UploadedFile]) -> None:
    for upload in uploads:
        upload.close()
