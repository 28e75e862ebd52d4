"""Azure Event Hubs: each consumer group's lag per partition, from its checkpoints.

`eventhubs://<policy>:<key>@<namespace>.servicebus.windows.net?checkpoints=<container URL>`
where the container URL (percent-encoded, with a SAS token that may list
and read) is the blob container the consumers' checkpoint store writes to,
as the Event Hubs SDKs' blob checkpoint stores do: one blob per
partition, `<namespace host>/<event hub>/<consumer group>/checkpoint/<partition>`
(lower case) with the `sequencenumber` and `offset` in its metadata, and
ownership blobs (`…/ownership/<partition>`) that the owning processor
renews every few seconds.

The namespace's management endpoint (api-version 2014-01) lists the event
hubs and, per partition, its PartitionDescription with the
EndSequenceNumber (the last enqueued event's sequence number) and
LastEnqueuedTimeUtc. Lag = EndSequenceNumber − checkpointed sequence
number; both are kept as the end and committed offsets, so the time lag is
interpolated from the history of end offsets as for Kafka. An ownership
blob's last modification is the consumer's last sign of life. Consumer
groups without any checkpoint are not shown: nothing says where they are.
"""

import time
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from collector.brokers.azure import Namespace, local, number
from collector.brokers.samples import Reading, Report

SYSTEM = "eventhubs"
API_VERSION = "2014-01"


def checkpoint_blobs(text: str) -> tuple[list[dict], str | None]:
    """(blobs: {"name", "modified", "metadata"}, next marker) of a List Blobs answer."""
    root = ET.fromstring(text)
    blobs = []
    for blob in root.iter():
        if local(blob.tag) != "Blob":
            continue
        item = {"name": "", "modified": None, "metadata": {}}
        for child in blob:
            name = local(child.tag)
            if name == "Name":
                item["name"] = child.text or ""
            elif name == "Properties":
                for prop in child:
                    if local(prop.tag) == "Last-Modified" and prop.text:
                        item["modified"] = parsedate_to_datetime(prop.text).timestamp()
            elif name == "Metadata":
                item["metadata"] = {local(m.tag).lower(): (m.text or "") for m in child}
        blobs.append(item)
    marker = next((e.text for e in root if local(e.tag) == "NextMarker" and e.text), None)
    return blobs, marker


async def list_checkpoints(client: httpx.AsyncClient, container: str, prefix: str) -> list[dict]:
    """Every blob under `prefix` in the checkpoint container, with its metadata."""
    parts = urlsplit(container)
    sas = dict(parse_qsl(parts.query))
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    found, marker = [], None
    while True:
        params = {**sas, "restype": "container", "comp": "list", "include": "metadata",
                  "prefix": prefix, **({"marker": marker} if marker else {})}  # fmt: skip
        response = await client.get(base, params=params, headers={"x-ms-version": "2021-08-06"})
        if response.status_code in (401, 403):
            raise ConnectionError(
                f"checkpoint container refused the listing ({response.status_code}): "
                "its SAS needs the list and read permissions"
            )
        response.raise_for_status()
        blobs, marker = checkpoint_blobs(response.text)
        found += blobs
        if not marker:
            return found


def positions(blobs: list[dict], prefix: str):
    """{consumer group: {partition: sequence number}}, {group: {partition: owner's renewal}}."""
    checkpoints: dict[str, dict[str, int]] = {}
    owners: dict[str, dict[str, float]] = {}
    for blob in blobs:
        rest = blob["name"][len(prefix) :].split("/")
        if len(rest) != 3:
            continue
        group, kind, partition = rest
        if kind == "checkpoint" and "sequencenumber" in blob["metadata"]:
            checkpoints.setdefault(group, {})[partition] = number(
                blob["metadata"]["sequencenumber"]
            )
        elif kind == "ownership" and blob["modified"] is not None:
            owners.setdefault(group, {})[partition] = blob["modified"]
    return checkpoints, owners


async def poll(url: str, timeout: float) -> Report:
    """Readings for every consumer group with checkpoints, per partition of each event hub."""
    namespace = Namespace.from_url(url, API_VERSION)
    container = namespace.query.get("checkpoints")
    if not container:
        raise ValueError("eventhubs:// needs ?checkpoints=<blob container URL with a SAS token>")
    async with namespace.client(timeout) as client:
        hubs = [name for name, _ in await namespace.feed(client, "/$Resources/EventHubs")]
        partitions = {
            hub: await namespace.feed(client, f"/{hub}/consumergroups/$Default/partitions")
            for hub in hubs
        }
    async with httpx.AsyncClient(timeout=timeout) as storage:
        blobs = {
            hub: await list_checkpoints(storage, container, f"{namespace.host}/{hub}/".lower())
            for hub in hubs
        }
    now = time.time()
    readings = []
    for hub in hubs:
        prefix = f"{namespace.host}/{hub}/".lower()
        checkpoints, owners = positions(blobs[hub], prefix)
        ends = {pid: description for pid, description in partitions[hub]}
        for group, by_partition in sorted(checkpoints.items()):
            for pid, description in sorted(ends.items(), key=lambda p: int(p[0] or 0)):
                if pid not in by_partition:
                    continue
                end = number(description.get("EndSequenceNumber"))
                committed = by_partition[pid]
                last_enqueued = description.get("LastEnqueuedTimeUtc")
                readings.append(
                    Reading(
                        system=SYSTEM,
                        namespace=namespace.name,
                        channel=hub,
                        group=group,
                        partition=pid,
                        end_offset=end,
                        committed_offset=min(committed, end),
                        lag=max(0, end - committed),
                        active_at=owners.get(group, {}).get(pid),
                        time=now,
                        details={
                            "last_enqueued_at": last_enqueued or None,
                            "begin_sequence_number": number(description.get("BeginSequenceNumber")),
                        },
                    )  # fmt: skip
                )
    return Report(readings)
