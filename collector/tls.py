"""TLS on the listening ports: server contexts that follow their certificate files.

One certificate and key (EVENTSCOPE_TLS_CERT_FILE, EVENTSCOPE_TLS_KEY_FILE)
serve every port. Certificates are re-read when the files change, so a
renewal (certbot, cert-manager, a mounted secret) needs no restart:

- uvicorn (OTLP/HTTP and the web port) gets an `ssl.SSLContext` whose SNI
  callback runs at the start of every handshake, before the server sends its
  certificate. When the files changed since the last load it builds a fresh
  context and moves the connection onto it; connections already open keep
  the certificate they started with.
- grpc calls a certificate-configuration fetcher before every handshake; it
  hands over the new files when they changed.

A change that does not load (a certificate written before its key, a
truncated file) keeps the certificate in use and is logged once; the next
change is tried again. TLS 1.2 is the minimum; the cipher suites are
Python's `ssl` defaults for TLS 1.2 and 1.3 (ECDHE key exchange with AES-GCM
or ChaCha20-Poly1305), which OpenSSL orders.

Mutual TLS (EVENTSCOPE_TLS_CLIENT_AUTH) applies to the ingest ports: clients
present a certificate issued by EVENTSCOPE_TLS_CLIENT_CA_FILE, optionally
(`optional`) or at the handshake (`required`). grpc can only require a
client certificate or not ask for one, so with `optional` the gRPC port does
not ask. A verified certificate's names (subject CN and DNS/URI/e-mail
subject alternative names) can stand for an ingest token
(EVENTSCOPE_TLS_CLIENT_PROJECTS, see collector/auth.py).
"""

import logging
import os
import ssl
import threading
from dataclasses import dataclass

from django.conf import settings

log = logging.getLogger(__name__)

CLIENT_AUTH_MODES = ("off", "optional", "required")
TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


@dataclass(frozen=True)
class TLSFiles:
    """Where the server's certificate, key and client CA live, and how clients are checked."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""
    client_auth: str = "off"

    @classmethod
    def from_settings(cls) -> "TLSFiles | None":
        """The configured files, or None when the ports speak plain text."""
        if not settings.TLS_CERT_FILE:
            return None
        return cls(
            settings.TLS_CERT_FILE,
            settings.TLS_KEY_FILE,
            settings.TLS_CLIENT_CA_FILE,
            settings.TLS_CLIENT_AUTH,
        )

    def paths(self, client_auth: bool) -> tuple[str, ...]:
        if client_auth and self.client_auth != "off":
            return (self.cert_file, self.key_file, self.client_ca_file)
        return (self.cert_file, self.key_file)

    def signature(self, client_auth: bool) -> tuple:
        """What changes when any of the files is rewritten or replaced."""
        out = []
        for path in self.paths(client_auth):
            try:
                stat = os.stat(path)
            except OSError:
                out.append(None)
            else:
                out.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(out)


def server_context(files: TLSFiles, client_auth: bool = False) -> ssl.SSLContext:
    """A server context from the files as they are now; raises OSError or ssl.SSLError.

    `client_auth` asks for client certificates as files.client_auth says (the
    ingest ports); without it clients are never asked (the web port, where a
    browser would prompt).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert_file, files.key_file)
    if client_auth and files.client_auth != "off":
        context.load_verify_locations(cafile=files.client_ca_file)
        context.verify_mode = (
            ssl.CERT_REQUIRED if files.client_auth == "required" else ssl.CERT_OPTIONAL
        )
    context.set_alpn_protocols(["http/1.1"])
    return context


class RotatingContext:
    """The SSLContext handed to an asyncio server, following the files.

    `context` is what the server wraps every connection with; its SNI
    callback (which OpenSSL calls for every ClientHello, with or without a
    server name) moves the connection onto the newest loaded context.
    """

    def __init__(self, files: TLSFiles, client_auth: bool = False):
        self.files = files
        self.client_auth = client_auth
        self._signature = files.signature(client_auth)
        self._failed = None
        self.context = server_context(files, client_auth)
        self.current = self.context
        self.loads = 1
        self.context.sni_callback = self._on_client_hello

    def refresh(self) -> ssl.SSLContext:
        """The newest context, reloading the files first when they changed."""
        signature = self.files.signature(self.client_auth)
        if signature != self._signature and signature != self._failed:
            try:
                fresh = server_context(self.files, self.client_auth)
            except (OSError, ssl.SSLError) as exc:
                self._failed = signature
                log.warning(
                    "TLS certificate files changed but do not load (%s); still serving "
                    "the previous certificate",
                    exc,
                )
            else:
                self._signature, self._failed = signature, None
                self.current = fresh
                self.loads += 1
                log.info("TLS certificate reloaded from %s", self.files.cert_file)
        return self.current

    def _on_client_hello(self, ssl_object, server_name, context):
        current = self.refresh()
        if ssl_object.context is not current:
            ssl_object.context = current
        return None


class CertificateFetcher:
    """grpc's certificate-configuration fetcher: a new configuration when the
    files changed, else None (keep the current one). grpc calls it from its own
    threads before each handshake."""

    def __init__(self, files: TLSFiles, require_client_cert: bool):
        self.files = files
        self.require_client_cert = require_client_cert
        self._lock = threading.Lock()
        self._signature = files.signature(require_client_cert)
        self._failed = None
        self.initial = self._configuration()
        self.loads = 1

    def _configuration(self):
        import grpc

        # Loading into an ssl context first checks that the key matches the
        # certificate: grpc would only fail the handshakes.
        server_context(self.files, self.require_client_cert)
        with open(self.files.cert_file, "rb") as fh:
            chain = fh.read()
        with open(self.files.key_file, "rb") as fh:
            key = fh.read()
        roots = None
        if self.require_client_cert:
            with open(self.files.client_ca_file, "rb") as fh:
                roots = fh.read()
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)

    def __call__(self):
        with self._lock:
            signature = self.files.signature(self.require_client_cert)
            if signature == self._signature or signature == self._failed:
                return None
            try:
                configuration = self._configuration()
            except (OSError, ssl.SSLError) as exc:
                self._failed = signature
                log.warning(
                    "TLS certificate files changed but do not load (%s); OTLP/gRPC keeps "
                    "the previous certificate",
                    exc,
                )
                return None
            self._signature, self._failed = signature, None
            self.loads += 1
            log.info("OTLP/gRPC TLS certificate reloaded from %s", self.files.cert_file)
            return configuration


def grpc_credentials(files: TLSFiles):
    """Server credentials for the OTLP/gRPC port that follow the files."""
    import grpc

    required = files.client_auth == "required"
    if files.client_auth == "optional":
        log.info(
            "OTLP/gRPC does not ask for client certificates with EVENTSCOPE_TLS_CLIENT_AUTH="
            "optional (grpc can only require them); clients there authenticate with tokens"
        )
    fetcher = CertificateFetcher(files, required)
    credentials = grpc.dynamic_ssl_server_credentials(
        fetcher.initial, fetcher, require_client_authentication=required
    )
    return credentials, fetcher


# ---- the peer's certificate -------------------------------------------------------


def names_of(peer: dict) -> tuple[str, ...]:
    """The names a verified certificate (ssl's getpeercert() dict) is known by:
    subject CN first, then DNS, URI and e-mail subject alternative names."""
    names = []
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(value)
    for kind, value in peer.get("subjectAltName", ()):
        if kind in ("DNS", "URI", "email"):
            names.append(value)
    return tuple(dict.fromkeys(names))


def peer_extension(transport) -> dict | None:
    """The ASGI `tls` extension for a connection: the verified client certificate,
    its names (`client_cert_names`, an Eventscope addition) and the version."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    peer = ssl_object.getpeercert() or {}
    der = ssl_object.getpeercert(binary_form=True)
    subject = ",".join(
        f"{key}={value}" for rdn in reversed(peer.get("subject", ())) for key, value in rdn
    )
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": subject or None,
        "client_cert_error": None,
        "client_cert_names": names_of(peer),
        "tls_version": TLS_VERSIONS.get(ssl_object.version()),
        "cipher_suite": None,
    }


def client_names(scope) -> tuple[str, ...]:
    """The verified client certificate names of an ASGI request; () without one."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    return tuple(tls.get("client_cert_names") or ())


def peer_protocol(base: type) -> type:
    """A subclass of uvicorn's HTTP protocol `base` that puts the ASGI `tls`
    extension in every request's scope (uvicorn itself does not)."""

    class PeerCertificateProtocol(base):
        def connection_made(self, transport):
            super().connection_made(transport)
            extension = peer_extension(transport)
            if extension is None:
                return
            app = self.app

            async def with_peer(scope, receive, send):
                scope["extensions"] = {**(scope.get("extensions") or {}), "tls": extension}
                await app(scope, receive, send)

            self.app = with_peer

    PeerCertificateProtocol.__name__ = f"PeerCertificate{base.__name__}"
    return PeerCertificateProtocol


def uvicorn_options(
    files: TLSFiles | None, client_auth: bool = False, http_protocol: type | None = None
) -> dict:
    """Extra uvicorn.Config arguments serving TLS from `files` (none for plain text).

    `http_protocol` is the uvicorn HTTP protocol class the port uses; with
    client certificates it is extended to pass the peer's certificate on."""
    if files is None:
        return {}
    if http_protocol is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as http_protocol

    rotating = RotatingContext(files, client_auth)
    options = {"ssl_context_factory": lambda _config, _default: rotating.context}
    if client_auth and files.client_auth != "off":
        options["http"] = peer_protocol(http_protocol)
    return options
