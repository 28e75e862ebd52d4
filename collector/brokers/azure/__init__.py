"""Azure messaging: Service Bus, Event Hubs (through their namespaces' own
management endpoints and a shared access key) and Event Grid (through Azure
Resource Manager and Microsoft Entra ID).

Service Bus and Event Hubs URLs carry the shared access policy's name and
key (percent-encoded) as the user and password of the namespace's host,
as the namespace's connection string would:
`servicebus://RootManageSharedAccessKey:<key>@shop.servicebus.windows.net`.
Every request is signed with a shared access signature (SAS) made from
them, valid for a few minutes; the key itself never leaves the process.
`?endpoint_url=http://host:port` sends the requests elsewhere (a local
emulator or proxy) while the signature still names the namespace.

The management endpoints answer in Atom: a feed of entries whose content
is the entity's description (QueueDescription, SubscriptionDescription,
EventHubDescription, PartitionDescription…). `Namespace.feed()` reads it
page by page with `$skip`/`$top`, `fields()` reads one description by its
elements' local names.
"""

import base64
import hashlib
import hmac
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote_plus, unquote, urlsplit

import httpx

API_VERSION = "2021-05"
PAGE = 100
SAS_LIFETIME = 300


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def fields(element) -> dict[str, str]:
    """{local name: text} of an element's children, and of CountDetails' children."""
    found = {}
    for child in element:
        name = local(child.tag)
        if name == "CountDetails":
            found.update((local(c.tag), (c.text or "").strip()) for c in child)
        else:
            found[name] = (child.text or "").strip()
    return found


def entries(text: str) -> list[tuple[str, dict[str, str]]]:
    """(title, description fields) of every entry of an Atom feed (or of a single entry)."""
    root = ET.fromstring(text)
    items = [root] if local(root.tag) == "entry" else [e for e in root if local(e.tag) == "entry"]
    found = []
    for entry in items:
        title = next((e.text or "" for e in entry if local(e.tag) == "title"), "")
        content = next((e for e in entry if local(e.tag) == "content"), None)
        description = next(iter(content), None) if content is not None else None
        found.append((title, fields(description) if description is not None else {}))
    return found


def number(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


@dataclass(frozen=True)
class Namespace:
    """A Service Bus or Event Hubs namespace reached with a shared access key."""

    host: str  # shop.servicebus.windows.net
    key_name: str
    key: str
    endpoint: str  # where requests go: https://<host> or endpoint_url
    query: dict
    api_version: str = API_VERSION

    @property
    def name(self) -> str:
        return self.host.split(".", 1)[0]

    @classmethod
    def from_url(cls, url: str, api_version: str = API_VERSION) -> "Namespace":
        parts = urlsplit(url)
        if not parts.username or not parts.password:
            raise ValueError(
                f"{parts.scheme}:// needs the shared access policy as user and its key as password"
            )
        query = dict(parse_qsl(parts.query))
        host = parts.hostname or ""
        endpoint = (query.get("endpoint_url") or f"https://{host}").rstrip("/")
        return cls(
            host, unquote(parts.username), unquote(parts.password), endpoint, query, api_version
        )

    def sas(self, now: float | None = None) -> str:
        """A shared access signature for the whole namespace, as Azure documents it:
        HMAC-SHA256 of "<url-encoded resource URI>\\n<expiry>" with the key."""
        expiry = int((now or time.time()) + SAS_LIFETIME)
        resource = quote_plus(f"https://{self.host}/")
        signed = hmac.new(self.key.encode(), f"{resource}\n{expiry}".encode(), hashlib.sha256)
        signature = quote_plus(base64.b64encode(signed.digest()).decode())
        return (
            f"SharedAccessSignature sr={resource}&sig={signature}&se={expiry}&skn={self.key_name}"
        )

    def client(self, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.endpoint, timeout=timeout)

    async def get(self, client: httpx.AsyncClient, path: str, params: dict | None = None) -> str:
        response = await client.get(
            path,
            params={"api-version": self.api_version, **(params or {})},
            headers={"Authorization": self.sas(), "Accept": "application/atom+xml"},
        )
        if response.status_code in (401, 403):
            raise ConnectionError(
                f"{self.host} refused the shared access key {self.key_name!r} "
                f"({response.status_code}; reading entities needs the Manage right)"
            )
        response.raise_for_status()
        return response.text

    async def feed(self, client: httpx.AsyncClient, path: str) -> list[tuple[str, dict]]:
        """Every entry of a paged feed."""
        found, skip = [], 0
        while True:
            page = entries(await self.get(client, path, {"$skip": skip, "$top": PAGE}))
            found.extend(page)
            if len(page) < PAGE:
                return found
            skip += len(page)
