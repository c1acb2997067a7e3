"""A small DNS server for tests (DNS_RESOLVER points at it), on 127.0.0.1, UDP and TCP on the same free port.

Built on dnslib's server framework (`dnslib.server.DNSServer` + a custom resolver). Zone data lives in a dict that
tests may change while the server runs; every query reads it under a lock. Failure modes, globally or per name:

- ``"timeout"``: the query is read and never answered (the client's own timeout fires);
- ``"servfail"``: the server answers SERVFAIL.

Like a recursive resolver it follows CNAMEs inside its own data (the answer carries the CNAME and the target's
records), answers NXDOMAIN for names that do not exist and NOERROR/no data for names that exist with other types
(including empty non-terminals such as ``_domainkey.example.com``). UDP answers over 512 bytes are truncated (TC set,
no records), as a real server does for a client without EDNS, so clients retry over TCP.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import pytest
from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TXT, A, DNSError, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer

log = logging.getLogger(__name__)

Mode = Literal["normal", "timeout", "servfail"]
RecordType = Literal["A", "AAAA", "MX", "TXT", "CNAME"]
_TYPES: tuple[RecordType, ...] = ("A", "AAAA", "MX", "TXT", "CNAME")
UDP_LIMIT = 512  # bytes; DNS without EDNS


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def txt_strings(value: str) -> list[str]:
    """A TXT value as the ≤255-byte character-strings it must be stored in."""
    raw = value.encode()
    return [raw[i : i + 255].decode() for i in range(0, len(raw), 255)] or [""]


@dataclass
class Zone:
    """Records by (name, type). Values: A/AAAA address text, "pref host" for MX, target for CNAME, and for TXT either
    a str (split into 255-byte strings automatically) or a list of str (the exact character-strings)."""

    records: dict[tuple[str, RecordType], list[str | list[str]]] = field(default_factory=dict)
    mode: Mode = "normal"
    name_modes: dict[str, Mode] = field(default_factory=dict)
    queries: list[tuple[str, str, str]] = field(default_factory=list)  # (name, type, protocol) log
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, rtype: RecordType, value: str | list[str]) -> Zone:
        with self.lock:
            self.records.setdefault((_norm(name), rtype), []).append(value)
        return self

    def set(self, name: str, rtype: RecordType, *values: str | list[str]) -> Zone:
        """Replace all records of this name and type (no values: delete them)."""
        with self.lock:
            if values:
                self.records[(_norm(name), rtype)] = list(values)
            else:
                self.records.pop((_norm(name), rtype), None)
        return self

    def remove(self, name: str, rtype: RecordType | None = None) -> Zone:
        with self.lock:
            for key in [k for k in self.records if k[0] == _norm(name) and (rtype is None or k[1] == rtype)]:
                del self.records[key]
        return self

    def fail(self, name: str, mode: Mode) -> Zone:
        """Make queries for this exact name time out or SERVFAIL ("normal" clears it)."""
        with self.lock:
            if mode == "normal":
                self.name_modes.pop(_norm(name), None)
            else:
                self.name_modes[_norm(name)] = mode
        return self

    def clear(self) -> None:
        with self.lock:
            self.records.clear()
            self.name_modes.clear()
            self.queries.clear()
            self.mode = "normal"

    def _exists(self, name: str) -> bool:
        return any(n == name or n.endswith("." + name) for n, _ in self.records)


def _rr(name: str, rtype: RecordType, value: str | list[str], ttl: int) -> RR:
    rdata: A | AAAA | MX | TXT | CNAME
    if rtype == "A":
        rdata = A(value)
    elif rtype == "AAAA":
        rdata = AAAA(value)
    elif rtype == "MX":
        assert isinstance(value, str)
        pref, host = value.split()
        rdata = MX(host, int(pref))
    elif rtype == "CNAME":
        rdata = CNAME(value)
    else:
        strings = txt_strings(value) if isinstance(value, str) else value
        rdata = TXT([s.encode() for s in strings])
    return RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=ttl)


class _Dropped(DNSError):
    """Raised by the resolver to send no reply; dnslib's handler catches DNSError and just logs it."""


class ZoneResolver:
    """dnslib resolver interface: resolve(request, handler) -> reply DNSRecord. One instance serves all threads."""

    def __init__(self, zone: Zone, ttl: int = 60) -> None:
        self.zone = zone
        self.ttl = ttl

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        zone = self.zone
        qname = _norm(str(request.q.qname))
        qtype = QTYPE[request.q.qtype]
        with zone.lock:
            zone.queries.append((qname, qtype, getattr(handler, "protocol", "?")))
            mode = zone.name_modes.get(qname, zone.mode)
            if mode == "timeout":
                raise _Dropped(f"dropping query for {qname} {qtype}")
            reply = request.reply()
            if mode == "servfail":
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            name = qname
            for _ in range(8):  # CNAME chain, bounded
                found = zone.records.get((name, qtype), []) if qtype in _TYPES else []
                if found:
                    for value in found:
                        reply.add_answer(_rr(name, qtype, value, self.ttl))
                    return reply
                cname = zone.records.get((name, "CNAME"))
                if cname and qtype != "CNAME":
                    target = _norm(str(cname[0]))
                    reply.add_answer(_rr(name, "CNAME", target, self.ttl))
                    if zone.name_modes.get(target) == "servfail":
                        reply.header.rcode = RCODE.SERVFAIL
                        return reply
                    name = target
                    continue
                break
            if not zone._exists(name):
                reply.header.rcode = RCODE.NXDOMAIN
            return reply


class _Handler(DNSHandler):
    """Truncates UDP answers over 512 bytes (dnslib's default udplen=0 never truncates). dnslib's own
    DNSRecord.truncate() drops the question section too, and dnspython ignores a reply whose question does not
    match (it waits on until it times out instead of retrying over TCP): keep the question, drop the records."""

    def get_reply(self, data: bytes) -> bytes:
        if self.server.socket_type == socket.SOCK_STREAM:
            tcp_reply: bytes = super().get_reply(data)
            return tcp_reply
        request = DNSRecord.parse(data)
        reply = self.server.resolver.resolve(request, self)
        packed: bytes = reply.pack()
        if len(packed) > UDP_LIMIT:
            truncated = DNSRecord(header=reply.header, q=reply.q)
            truncated.header.tc = 1
            packed = truncated.pack()
        return packed


class _QuietLogger(DNSLogger):
    """dnslib's default logger prints every query to stdout; send it to logging at DEBUG instead."""

    def __init__(self) -> None:
        super().__init__(log="request,reply,truncated,error", prefix=False, logf=log.debug)


class FakeDNS:
    """UDP + TCP servers on 127.0.0.1:<port>, sharing one Zone. Use `start()`/`stop()` or as a context manager."""

    def __init__(self, zone: Zone | None = None, host: str = "127.0.0.1") -> None:
        self.zone = zone or Zone()
        self.host = host
        self.port = 0
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []

    @property
    def server(self) -> tuple[str, int]:
        """(host, port): what check_domain's `resolver` takes."""
        return self.host, self.port

    @property
    def address(self) -> str:
        """ "host:port", the form the DNS_RESOLVER setting takes."""
        return f"{self.host}:{self.port}"

    def start(self) -> FakeDNS:
        resolver = ZoneResolver(self.zone)
        # Bind UDP to port 0 (the kernel picks a free one), then TCP to the same number; retry if TCP's is taken.
        for _ in range(20):
            udp = DNSServer(resolver, address=self.host, port=0, logger=_QuietLogger(), handler=_Handler)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(
                    resolver, address=self.host, port=port, tcp=True, logger=_QuietLogger(), handler=_Handler
                )
            except OSError:
                udp.server.server_close()
                continue
            self.port = port
            self._servers = [udp, tcp]
            break
        else:
            raise RuntimeError("no free port for UDP and TCP together")
        for server in self._servers:
            # Our own thread instead of DNSServer.start_thread(): a short poll interval makes stop() fast (the
            # default 0.5 s is what shutdown() waits for), and we keep the thread to join it.
            thread = threading.Thread(
                target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-dns-{port}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.server.shutdown()  # DNSServer.stop() does only this ...
            server.server.server_close()  # ... and leaves the socket open: close it to free the port now
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> FakeDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running(records: Iterable[tuple[str, RecordType, str | list[str]]] = ()) -> Iterator[FakeDNS]:
    zone = Zone()
    for name, rtype, value in records:
        zone.add(name, rtype, value)
    server = FakeDNS(zone).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="dns_server")
def dns_server_fixture() -> Iterator[FakeDNS]:
    """A fresh DNS server on 127.0.0.1:<free port> (UDP + TCP); change `dns_server.zone` at any time."""
    server = FakeDNS().start()
    try:
        yield server
    finally:
        server.stop()
