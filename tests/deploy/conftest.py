"""One running `vpt-serve --demo` for every deployment check of the session.

The demo serves the model shipped in the package (see tests/servers.py), ready in seconds.
One /classify call is made first so that the request and uncertainty series have samples.
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.servers import Server, run_server


def multipart(data: bytes, filename: str = "x.png", ctype: str = "image/png") -> tuple[bytes, str]:
    boundary = "vptdeployboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return response.read().decode()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    with run_server(tmp_path_factory.mktemp("deploy-server")) as srv:
        png = tmp_path_factory.mktemp("img") / "x.png"
        Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(png)
        body, ctype = multipart(png.read_bytes())
        request = urllib.request.Request(srv.url + "/classify", data=body, headers={"Content-Type": ctype})
        urllib.request.urlopen(request, timeout=60).close()
        yield srv
