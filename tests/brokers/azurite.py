"""Azurite, Microsoft's official Azure Storage emulator, for tests that need a
real Blob service (the Event Hubs SDKs' checkpoint stores write there).

Installed once from its lock file in tests/azurite (`npm ci`, from the npm
registry) and started once per test run on a free port. Requests are authorised
with an account SAS made from the emulator's documented well-known account
key, as a storage account's own SAS would be.
"""

import base64
import datetime as dt
import fcntl
import hashlib
import hmac
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

PROJECT = Path(__file__).resolve().parent.parent / "azurite"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development account key (documented, not a secret).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
SAS_VERSION = "2021-08-06"


def account_sas(permissions: str, expiry: dt.datetime | None = None) -> str:
    """An account SAS for the Blob service (service, container and object
    levels), signed as Azure Storage documents it for version 2020-12-06 on."""
    expiry = expiry or dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    fields = {
        "sv": SAS_VERSION,
        "ss": "b",
        "srt": "sco",
        "sp": permissions,
        "se": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "spr": "https,http",
    }
    to_sign = "\n".join(
        [ACCOUNT, fields["sp"], fields["ss"], fields["srt"], "", fields["se"], "",
         fields["spr"], fields["sv"], "", ""]
    )  # fmt: skip
    digest = hmac.new(base64.b64decode(ACCOUNT_KEY), to_sign.encode(), hashlib.sha256).digest()
    return urlencode({**fields, "sig": base64.b64encode(digest).decode()})


def _install() -> Path:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed for Azurite (scripts/prepare-tests)", pytrace=False)
    digest = hashlib.sha256((PROJECT / "package-lock.json").read_bytes()).hexdigest()
    stamp = PROJECT / "node_modules" / ".package-lock.sha256"
    with open(PROJECT / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text().strip() != digest:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=PROJECT, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            if done.returncode != 0:
                pytest.fail(f"npm ci for Azurite failed:\n{done.stderr[-2000:]}", pytrace=False)
            stamp.write_text(digest + "\n")
    return PROJECT / "node_modules" / ".bin" / "azurite-blob"


class Azurite:
    def __init__(self, executable: Path, workdir: Path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [str(executable), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             "--location", str(workdir), "--silent", "--skipApiVersionCheck"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/{ACCOUNT}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"azurite-blob exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("azurite-blob did not listen within 60 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """A running Azurite Blob service: `.url` is the account's base URL."""
    server = Azurite(_install(), tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()
