"""TLS and proxy settings: read from the environment, refused loudly when they
do not fit together, and what the web app then does."""

import json
import subprocess
import sys

import pytest
import trustme

from tests.test_commands import ROOT, command_env

PRINT = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "proxy": s.SECURE_PROXY_SSL_HEADER,
    "hsts": s.SECURE_HSTS_SECONDS,
    "client_auth": s.TLS_CLIENT_AUTH,
    "projects": s.TLS_CLIENT_PROJECTS,
}))
"""


def settings_with(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PRINT],
        cwd=ROOT,
        env=command_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def pem_files(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    paths = {"cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem", "ca": tmp_path / "ca.pem"}
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return {name: str(path) for name, path in paths.items()}


def test_mutual_tls_and_proxy_settings_are_read(pem_files):
    result = settings_with(
        EVENTSCOPE_TLS_CERT_FILE=pem_files["cert"],
        EVENTSCOPE_TLS_KEY_FILE=pem_files["key"],
        EVENTSCOPE_TLS_CLIENT_CA_FILE=pem_files["ca"],
        EVENTSCOPE_TLS_CLIENT_AUTH="required",
        EVENTSCOPE_TLS_CLIENT_PROJECTS="payments=shop, spiffe://example.org/ns/a/sa/b=ops",
        EVENTSCOPE_TRUST_X_FORWARDED_PROTO="1",
        EVENTSCOPE_HSTS_SECONDS="600",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "proxy": ["HTTP_X_FORWARDED_PROTO", "https"],
        "hsts": 600,
        "client_auth": "required",
        "projects": {"payments": "shop", "spiffe://example.org/ns/a/sa/b": "ops"},
    }
    plain = json.loads(settings_with().stdout)
    assert plain["proxy"] is None and plain["hsts"] == 365 * 24 * 3600


@pytest.mark.parametrize(
    "env, message",
    [
        ({"EVENTSCOPE_TLS_CERT_FILE": "cert"}, "set both or neither"),
        ({"EVENTSCOPE_TLS_CERT_FILE": "cert", "EVENTSCOPE_TLS_KEY_FILE": "/nope"}, "no such file"),
        (
            {"EVENTSCOPE_TLS_CERT_FILE": "cert", "EVENTSCOPE_TLS_KEY_FILE": "key",
             "EVENTSCOPE_TLS_CLIENT_AUTH": "required"},
            "needs EVENTSCOPE_TLS_CERT_FILE, EVENTSCOPE_TLS_KEY_FILE and "
            "EVENTSCOPE_TLS_CLIENT_CA_FILE",
        ),
        ({"EVENTSCOPE_TLS_CLIENT_AUTH": "maybe"}, "expected one of off, optional, required"),
        ({"EVENTSCOPE_TLS_CLIENT_PROJECTS": "payments"}, "is not certificate-name=project-slug"),
        ({"EVENTSCOPE_TLS_CLIENT_PROJECTS": "payments=shop"}, "needs EVENTSCOPE_TLS_CLIENT_AUTH"),
    ],
)  # fmt: skip
def test_settings_that_do_not_fit_together_are_refused(pem_files, env, message):
    env = {key: pem_files.get(value, value) for key, value in env.items()}
    result = settings_with(**env)
    assert result.returncode != 0
    assert message in result.stderr


def test_https_behind_a_trusted_proxy_gets_hsts_and_plain_http_does_not(client, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    secure = client.get("/login/", HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == f"max-age={settings.SECURE_HSTS_SECONDS}"
    plain = client.get("/login/")
    assert "Strict-Transport-Security" not in plain
