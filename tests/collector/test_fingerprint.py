"""collector.fingerprint: error messages to templates, the same everywhere."""

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import fingerprint

# (message as a real system writes it, the template it belongs to)
CORPUS = [
    ("carrier rejected the address of ord-000195", "carrier rejected the address of <id>"),
    ("order_42 not found", "<id> not found"),
    ("invoice INV-2024-0042 is already paid", "invoice <id> is already paid"),
    ("customer cus_9s8f7d6a5 has no default payment method",
     "customer <id> has no default payment method"),
    ("user 3f2b9c1e-4a5d-4e6f-8a9b-0c1d2e3f4a5b has no cart", "user <uuid> has no cart"),
    ("USER 3F2B9C1E-4A5D-4E6F-8A9B-0C1D2E3F4A5B HAS NO CART", "USER <uuid> HAS NO CART"),
    ("object 0x7f3a2b1c4d5e is gone", "object <hex> is gone"),
    ("commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 missing", "commit <hex> missing"),
    ("trace 4bf92f3577b34da6a3ce929d0e0e4736 not sampled", "trace <hex> not sampled"),
    ("SMTP 550 mailbox unavailable for jane.doe+shop@example.com",
     "SMTP <num> mailbox unavailable for <email>"),
    ("connection refused: 10.0.3.17:5432", "connection refused: <ip>:<num>"),
    ("connect to [2001:db8::ff00:42:8329]:443 failed", "connect to [<ip>]:<num> failed"),
    ("dial tcp [::1]:6379: connect: connection refused",
     "dial tcp [<ip>]:<num>: connect: connection refused"),
    ("deadline exceeded at 2024-05-01T12:34:56.789Z", "deadline exceeded at <time>"),
    ("token expired 2024-05-01 12:34:56+02:00", "token expired <time>"),
    ("retry at Mon, 02 Jan 2006 15:04:05 GMT", "retry at <time>"),
    ("batch of 2024-05-01 skipped", "batch of <time> skipped"),
    ("timeout after 30s waiting for 12:00:01", "timeout after <num>s waiting for <time>"),
    ("took 1.5s (limit 1000ms)", "took <num>s (limit <num>ms)"),
    ("GET https://api.carrier.example/v2/orders/ord-000195/labels?token=abc123&page=2 returned 502",
     "GET https://api.carrier.example/v2/orders/<id>/labels?token=<quoted>&page=<quoted> "
     "returned <num>"),
    ("POST http://10.1.2.3:8080/hooks/77 timed out", "POST http://<ip>:<num>/hooks/<num> timed out"),
    ('column "email" of relation "users" violates not-null constraint',
     "column <quoted> of relation <quoted> violates not-null constraint"),
    ("can't parse 'abc' as int", "can't parse <quoted> as int"),
    ('duplicate key value violates unique constraint "orders_pkey" DETAIL: Key (id)=(42) '
     "already exists.",
     "duplicate key value violates unique constraint <quoted> DETAIL: Key (id)=(<num>) "
     "already exists."),
    ("kafka-2:9092 is not the leader for partition orders-3",
     "<id>:<num> is not the leader for partition <id>"),
    ("ULID 01ARZ3NDEKTSV4RRFFQ69G5FAV rejected", "ULID <id> rejected"),
    ("payment declined: card 4", "payment declined: card <num>"),
    ("insufficient funds: balance 12.50 < 99.99", "insufficient funds: balance <num> < <num>"),
    ("version 1.2.3 unsupported", "version <num> unsupported"),
    ("ActiveRecord::RecordNotFound: Couldn't find Order with 'id'=17",
     "ActiveRecord::RecordNotFound: Couldn't find Order with <quoted>=<num>"),
    ("std::bad_alloc", "std::bad_alloc"),
    ("TimeoutError", "TimeoutError"),
    ("http2 stream reset by Base64Exception", "http2 stream reset by Base64Exception"),
    ("message 17 of 3 retries exhausted; moved to orders.dlq",
     "message <num> of <num> retries exhausted; moved to orders.dlq"),
    ("traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 invalid",
     "traceparent <num>-<hex>-<hex>-<num> invalid"),
    ('{"order": 42, "status": "lost"} rejected by schema v2',
     "{<quoted>: <num>, <quoted>: <quoted>} rejected by schema v2"),
    ("Lock wait timeout exceeded; try restarting transaction (thread 81723)",
     "Lock wait timeout exceeded; try restarting transaction (thread <num>)"),
    ("", ""),
]  # fmt: skip


@pytest.mark.parametrize(("message", "expected"), CORPUS)
def test_real_messages_get_the_expected_template(message, expected):
    assert fingerprint.template(message) == expected


def test_the_corpus_covers_every_placeholder():
    templates = " ".join(expected for _, expected in CORPUS)
    for name in ("num", "uuid", "hex", "id", "email", "quoted", "ip", "time"):
        assert f"<{name}>" in templates, name
    assert len(CORPUS) >= 30


def test_the_error_type_separates_groups_with_the_same_text():
    _, timeout = fingerprint.of("order 1 failed", "TimeoutError")
    _, refused = fingerprint.of("order 2 failed", "ConnectionRefusedError")
    _, untyped = fingerprint.of("order 3 failed", "")
    assert len({timeout, refused, untyped}) == 3
    assert fingerprint.of("order 4 failed", "TimeoutError")[1] == timeout


def test_the_error_type_is_the_attribute_else_the_first_exception_type():
    assert fingerprint.error_type("TimeoutError", ["ValueError"]) == "TimeoutError"
    assert fingerprint.error_type(None, [None, "", "ValueError", "KeyError"]) == "ValueError"
    assert fingerprint.error_type(500) == "500"
    assert fingerprint.error_type(None, [True]) == ""


def test_two_processes_compute_the_same_fingerprints():
    """Collector processes are separate interpreters (string hashing differs
    between them): the template and fingerprint must not."""
    messages = [message for message, _ in CORPUS]
    script = (
        "import json, sys\n"
        "from collector import fingerprint\n"
        "print(json.dumps([fingerprint.of(m, 'E') for m in json.load(sys.stdin)]))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(messages),
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout
        for seed in ("1", "2")
    ]
    here = [list(fingerprint.of(m, "E")) for m in messages]
    assert json.loads(runs[0]) == json.loads(runs[1]) == here


# ---- properties ------------------------------------------------------------------

TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200
) | st.text(alphabet="ab01-_.:'\"@/ xf<>=?&#Z+", max_size=60)


# Long messages: past the length that is parameterised, and templates that get cut.
LONG = st.lists(
    st.sampled_from(["1", "ord-000195", "'a b'", '"', "deadbeef1", "x@y.io", "word", " ", "::1"]),
    min_size=200,
    max_size=700,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_a_template_is_its_own_template(message):
    once = fingerprint.template(message)
    assert fingerprint.template(once) == once


@settings(max_examples=25, deadline=None)
@given(LONG)
def test_a_long_message_s_cut_template_is_its_own_template(message):
    once = fingerprint.template(message)
    assert len(once) <= fingerprint.MAX_TEMPLATE
    assert fingerprint.template(once) == once


@settings(max_examples=200, deadline=None)
@given(TEXT, st.sampled_from(["", "TimeoutError"]))
def test_a_message_and_its_template_are_the_same_group(message, error_type):
    """So `error=<a message>` and `error=<its template>` name the same group."""
    assert fingerprint.of(message, error_type) == fingerprint.of(
        fingerprint.template(message), error_type
    )


def test_long_messages_cost_little_and_give_bounded_templates():
    import time

    for message in ('"\\' * 500_000, "a." * 500_000, "1 " * 500_000):
        began = time.perf_counter()
        shape = fingerprint.template(message)
        assert time.perf_counter() - began < 2  # generous: milliseconds in practice
        assert len(shape) <= fingerprint.MAX_TEMPLATE
        assert fingerprint.template(shape) == shape


def test_fingerprints_do_not_change_between_releases():
    """Stored rollups are keyed by these values: a change splits every group in two
    (and needs a migration that rewrites the rows, as 0006 does)."""
    assert fingerprint.of("carrier rejected the address of ord-000195") == (
        "carrier rejected the address of <id>",
        "3fcaba126296d853",
    )
    assert fingerprint.of("order 1 failed", "TimeoutError") == (
        "order <num> failed",
        "547e58ea3e07579d",
    )


WORDS = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8), min_size=1, max_size=6
)
IDS = (
    st.integers(0, 10**12).map(str),
    st.uuids().map(str),
    st.integers(0, 10**6).map(lambda n: f"ord-{n:06d}"),
    st.integers(0, 10**6).map(lambda n: f"order_{n}"),
    st.integers(0, 9999).map(lambda n: f"INV-2024-{n:04d}"),
    st.binary(min_size=8, max_size=20).map(lambda b: "0x" + b.hex()),
    st.binary(min_size=8, max_size=20).map(lambda b: b.hex() + "a1"),
    st.from_regex(r"[a-z]{1,8}\.[a-z]{1,8}@[a-z]{2,8}\.com", fullmatch=True),
    st.from_regex(r"'[a-z0-9 ]{0,12}'", fullmatch=True),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.datetimes().map(lambda d: d.isoformat(timespec="seconds") + "Z"),
    st.builds(
        "https://shop.example/orders/{}?page={}".format, st.integers(0, 10**6), st.integers()
    ),
)


@settings(max_examples=150, deadline=None)
@given(WORDS, st.data())
def test_messages_that_differ_only_in_ids_share_a_template(words, data):
    kinds = data.draw(st.lists(st.sampled_from(IDS), min_size=len(words), max_size=len(words)))

    def message():
        return " ".join(
            f"{word} {data.draw(kind)}" for word, kind in zip(words, kinds, strict=True)
        )

    first, second = message(), message()
    assert fingerprint.template(first) == fingerprint.template(second)
    assert fingerprint.of(first, "E") == fingerprint.of(second, "E")
