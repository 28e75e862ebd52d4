"""Pollers and the channel layer over TLS verify the server they talk to.

The local Redis, RabbitMQ management API and a Prometheus endpoint are put
behind a TLS terminator started in the test, with a certificate from a CA
made here: nothing trusts it until it is configured.
"""

import asyncio
import contextlib
import ssl
import uuid

import pytest
import redis.asyncio as aioredis
import trustme
from channels_redis.core import RedisChannelLayer

from collector.brokers import rabbitmq, redis_streams
from collector.brokers.poller import scrape


@contextlib.asynccontextmanager
async def tls_in_front_of(port: int, ca: trustme.CA):
    """A TLS listener on 127.0.0.1 that forwards every connection to 127.0.0.1:`port`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    connections = set()

    async def forward(client_reader, client_writer):
        connections.add(asyncio.current_task())
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer)
            )
        finally:
            connections.discard(asyncio.current_task())

    server = await asyncio.start_server(forward, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)


@pytest.fixture
def ca(tmp_path):
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    authority.path = str(tmp_path / "ca.pem")
    return authority


@pytest.fixture
def stream():
    """A Redis stream with a consumer group that is 3 messages behind."""
    key = f"tls-test-{uuid.uuid4().hex[:8]}"

    async def make():
        client = aioredis.from_url("redis://127.0.0.1:6379/0")
        for n in range(3):
            await client.xadd(key, {"n": n})
        await client.xgroup_create(key, "billing", id="0")
        await client.aclose()

    asyncio.run(make())
    yield key

    async def drop():
        client = aioredis.from_url("redis://127.0.0.1:6379/0")
        await client.delete(key)
        await client.aclose()

    asyncio.run(drop())


def _readings_of(readings, key):
    return [(r.channel, r.group, r.lag) for r in readings if r.channel == key]


async def test_the_redis_streams_poller_verifies_rediss_servers(stream, ca):
    async with tls_in_front_of(6379, ca) as port:
        with pytest.raises(Exception, match="certificate verify failed"):
            await redis_streams.poll(f"rediss://127.0.0.1:{port}/0", timeout=5)
        readings = await redis_streams.poll(
            f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca.path}", timeout=5
        )
    assert _readings_of(readings, stream) == [(stream, "billing", 3)]


async def test_the_channel_layer_speaks_to_redis_over_verified_tls(ca):
    async with tls_in_front_of(6379, ca) as port:
        # As dashboard/settings.py configures it from REDIS_URL.
        layer = RedisChannelLayer(hosts=[f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca.path}"])
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "flow.changed"})
        assert (await asyncio.wait_for(layer.receive(channel), 10)) == {"type": "flow.changed"}
        await layer.flush()
        untrusted = RedisChannelLayer(hosts=[f"rediss://127.0.0.1:{port}/0"])
        with pytest.raises(Exception, match="certificate verify failed"):
            await untrusted.send("some-channel", {"type": "x"})
        await untrusted.close_pools()
        await layer.close_pools()


async def test_the_rabbitmq_poller_verifies_the_management_api_over_https(ca, monkeypatch):
    async with tls_in_front_of(15672, ca) as port:
        url = f"rabbitmq+https://guest:guest@127.0.0.1:{port}"
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            await rabbitmq.poll(url, timeout=5)
        # A private CA is trusted the standard way for HTTPS clients.
        monkeypatch.setenv("SSL_CERT_FILE", ca.path)
        readings = await rabbitmq.poll(url, timeout=10)
    assert isinstance(readings, list)


async def test_a_prometheus_scrape_over_https_verifies_the_endpoint(scrape_target, ca, monkeypatch):
    scrape_target.text = 'kafka_consumergroup_lag{consumergroup="g",topic="t",partition="0"} 5\n'
    upstream = int(scrape_target.url.rsplit(":", 1)[1])
    async with tls_in_front_of(upstream, ca) as port:
        url = f"prometheus+https://127.0.0.1:{port}/metrics"
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            await scrape(url, timeout=5)
        monkeypatch.setenv("SSL_CERT_FILE", ca.path)
        report = await scrape(url, timeout=5)
    assert [(r.system, r.channel, r.group) for r in report.readings] == [("kafka", "t", "g")]
