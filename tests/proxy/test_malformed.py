"""1,000 malformed requests in a row: each gets 400/431 or a closed connection, and the proxy keeps serving."""

from __future__ import annotations

import random

import trio

from actors.proxy._http import MAX_HEAD_BYTES
from actors.proxy._policy import NetworkPolicy
from tests.helpers.proxy import UPSTREAM_BODY, Upstream, get_request, make_proxy, raw_exchange, running

MALFORMED_COUNT = 1000
#: A good request is interleaved after this many malformed ones.
GOOD_EVERY = 100
SEED = 20240601
#: Whole-run bound (sequential connections on a loaded 2-core machine).
RUN_BOUND_S = 20.0

BROKEN_LINES = [
    b"GET\r\n\r\n",
    b"GET http://a.test/\r\n\r\n",
    b"GET  http://a.test/ HTTP/1.1\r\n\r\n",
    b"GET http://a.test/ HTTP/2.0\r\n\r\n",
    b"GET http://a.test/ HTTP/1.1 extra\r\n\r\n",
    b"GET http://a.test/ http/1.1\r\n\r\n",
    b"G(T http://a.test/ HTTP/1.1\r\n\r\n",
    b"GET http://a.test/ HTTP/1.1\nHost: a\n\n",
    b"GET http://a.test/ HTTP/1.1\r\nNoColonHere\r\n\r\n",
    b"GET http://a.test/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
    b"GET http://a.test/ HTTP/1.1\r\nBad Name: 1\r\n\r\n",
    b"GET http://a.test/ HTTP/1.1\r\nX: a\rb\r\n\r\n",
    b"GET http://a.test/ HTTP/1.1\r\nX: \x00\r\n\r\n",
    b"GET http://a b/ HTTP/1.1\r\n\r\n",
    b"GET http://[::1/ HTTP/1.1\r\n\r\n",
    b"GET http://a.test:99999/ HTTP/1.1\r\n\r\n",
    b"GET http://a.test:8x/ HTTP/1.1\r\n\r\n",
    b"GET http://a..test/ HTTP/1.1\r\n\r\n",
    b"GET http://%zz/ HTTP/1.1\r\n\r\n",
    b"GET http://a.test/#frag HTTP/1.1\r\n\r\n",
    b"GET http://user@a.test/ HTTP/1.1\r\n\r\n",
    b"GET /relative HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET https://a.test/ HTTP/1.1\r\n\r\n",
    b"GET ftp://a.test/ HTTP/1.1\r\n\r\n",
    b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"POST http://a.test/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"CONNECT a.test HTTP/1.1\r\n\r\n",
    b"CONNECT [::1 HTTP/1.1\r\n\r\n",
    b"CONNECT a.test:0 HTTP/1.1\r\n\r\n",
    b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n",  # ends inside the head
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello sent to the plain proxy
]


def _random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) + b"\r\n\r\n"


def _mutated(rng: random.Random) -> bytes:
    """A valid request line with one byte replaced by a control character (always invalid there)."""
    line = bytearray(b"GET http://a.test/path HTTP/1.1")
    line[rng.randrange(len(line))] = rng.choice([0, 1, 8, 11, 12, 27, 127])
    return bytes(line) + b"\r\nHost: a\r\n\r\n"


def _oversized(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return b"GET http://a.test/ HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 100) + b"\r\n\r\n"
    many = b"".join(b"X-%d: v\r\n" % i for i in range(200))
    return b"GET http://a.test/ HTTP/1.1\r\n" + many + b"\r\n"


def _corpus(rng: random.Random) -> list[bytes]:
    makers = [_random_bytes, _mutated, _oversized, lambda r: r.choice(BROKEN_LINES)]
    return [makers[i % len(makers)](rng) for i in range(MALFORMED_COUNT)]


async def test_thousand_malformed_requests_then_still_serving() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        server, _, connector = make_proxy(NetworkPolicy(allowed_domains=(f"127.0.0.1:{up_port}",)))
        good = get_request(f"http://127.0.0.1:{up_port}/hello")
        outcomes: dict[int, int] = {}
        async with running(server) as port:
            with trio.fail_after(RUN_BOUND_S):
                for i, request in enumerate(_corpus(random.Random(SEED))):
                    response = await raw_exchange(port, request)
                    outcomes[response.status] = outcomes.get(response.status, 0) + 1
                    assert response.status in (0, 400, 431), (request[:80], response.raw[:200])
                    if i % GOOD_EVERY == GOOD_EVERY - 1:
                        ok = await raw_exchange(port, good)
                        assert ok.status == 200 and ok.body == UPSTREAM_BODY
            assert server.active_connections == 0
    assert sum(outcomes.values()) == MALFORMED_COUNT
    assert outcomes.get(400, 0) > MALFORMED_COUNT // 2 and outcomes.get(431, 0) > 0
    assert len(connector.dials) == MALFORMED_COUNT // GOOD_EVERY
