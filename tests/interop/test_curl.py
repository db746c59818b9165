"""Uploads the way curl sends them (Debian's curl): with ``Expect: 100-continue``, chunked when the size is unknown.

curl is the other client people point at a server. For a body over 1 MiB, or of unknown size (stdin), it
sends ``Expect: 100-continue`` and waits for the 100 before the body, which is a code path ``requests``
never takes.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from hashlib import sha256

import pytest

from tests.interop.conftest import Live
from tests.support import TIMEOUT

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (Debian package 'curl')"),
]

DATA = random.Random(5).randbytes(2_000_000)

INVOCATIONS = {
    # Known size: Content-Length and Expect: 100-continue.
    "data-binary": ["--data-binary", "@-"],
    # Unknown size (stdin): Transfer-Encoding: chunked and Expect: 100-continue.
    "chunked": ["--data-binary", "@-", "-H", "Transfer-Encoding: chunked"],
    "upload-file": ["-X", "POST", "--upload-file", "-"],
}


def curl(*args: str, data: bytes) -> tuple[str, dict]:
    """Run curl with ``data`` on stdin; returns (its verbose trace, the JSON answer)."""
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--verbose", "--max-time", str(TIMEOUT), *args],
        input=data,
        capture_output=True,
        timeout=TIMEOUT + 5,
    )
    trace = result.stderr.decode("latin-1")
    assert result.returncode == 0, trace
    return trace, json.loads(result.stdout)


@pytest.mark.parametrize("how", list(INVOCATIONS))
def test_curl_raw_upload(live: Live, how: str) -> None:
    trace, answer = curl(*INVOCATIONS[how], "-H", "Content-Type: application/octet-stream", f"{live.url}/echo",
                         data=DATA)  # fmt: skip
    assert "> Expect: 100-continue" in trace  # the path under test was taken
    assert answer == {"size": len(DATA), "sha256": sha256(DATA).hexdigest()}, trace
    assert "< HTTP/1.1 100 Continue" in trace


def test_curl_multipart_upload(live: Live) -> None:
    trace, answer = curl("-F", "note=from curl", "-F", "file=@-;filename=data.bin", f"{live.url}/upload", data=DATA)
    assert "> Expect: 100-continue" in trace
    assert answer == {
        "fields": {"note": ["from curl"]},
        "files": {"file": {"filename": "data.bin", "size": len(DATA), "sha256": sha256(DATA).hexdigest()}},
    }
