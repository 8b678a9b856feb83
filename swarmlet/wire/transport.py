"""The network between agents: sealed UDP datagrams and framed TCP streams on one port.

Every byte that arrives from the network is untrusted. A datagram or frame that is oversized,
truncated, fails authentication or does not decode to an expected message is dropped and counted
in `Counters`; it never raises out of the receive loops and never stops the agent.

TCP connection layout: the first byte names the channel.
  ``T``  cluster channel: TLS 1.3, both sides authenticated by their node certificates
         (`swarmlet.certs`); frames are plain msgpack inside TLS. Every stream knows its peer
         (`FramedStream.peer`), and the `admit` policy it was given is asked again before each
         frame in either direction, so a peer revoked meanwhile is cut off mid-connection.
  ``J``  join channel: followed by the 8-byte id of a join key; frames sealed with that key. Only
         the join handshake travels here (see `swarmlet.security.join`).
A frame is ``[u32 big-endian length][msgpack, sealed on the join channel]``; lengths above
`max_frame_bytes` close the connection before anything is allocated.

Before a peer is authenticated it can only make the TLS handshake, within `handshake_timeout_s`;
at most `max_connections` connections are served at once, at most `max_connections_per_node` of
them for one node that is not a manager, and at most `max_handshakes_per_ip` not authenticated
yet from one address (more are closed at once, counted); a peer that is not a manager sends
frames of at most MAX_NON_MANAGER_FRAME_BYTES, a manager of at most MAX_FRAME_BYTES but on the
stream Raft takes from it, where a snapshot of the whole state may come in one frame
(`FramedStream.allow_snapshots`).

Versions (`protocol_version`): the TLS handshake settles which protocol the two agents speak
(ALPN), kept as `FramedStream.peer_protocol` and counted (`streams_protocol_<v>`); a peer with none
in common is refused after the handshake, before any frame, counted as `refused_peer_protocol`
and logged once per peer. The join channel and datagrams carry no version (why:
`protocol_version`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmlet import off_loop
from swarmlet.certs import PeerIdentity, identity_of_der
from swarmlet.crypto import (
    AAD_JOIN,
    KEY_ID_BYTES,
    SIGNATURE_BYTES,
    Sealer,
    check_signature,
)
from swarmlet.errors import RemoteProtocolError, UsageError
from swarmlet.wire import codec as wire
from swarmlet.wire import protocol_version
from swarmlet.wire.datagram_keys import DatagramKeys
from swarmlet.wire.hosts import is_host, is_port
from swarmlet.wire.tls_socket import TlsSocketStream

log = logging.getLogger(__name__)

Address = tuple[str, int]
CHANNEL_CLUSTER = b"T"
CHANNEL_JOIN = b"J"
MAX_DATAGRAM_BYTES = 65507  # the largest UDP payload over IPv4
MAX_FRAME_BYTES = wire.MAX_MESSAGE_BYTES
# On a stream that carries Raft from a manager (`FramedStream.allow_snapshots`): an
# InstallSnapshot, the cluster's state in one frame, with room for its header.
MAX_SNAPSHOT_FRAME_BYTES = wire.MAX_SNAPSHOT_BYTES + 1024 * 1024
# What one read of a frame asks the socket for, at most: the size of a large frame would be a
# buffer of that size allocated (and shrunk) at every read.
_READ_BYTES = 1024 * 1024
# Frames sent together are copied into one buffer (one system call) up to this size in all.
_JOINED_WRITE_BYTES = 1024 * 1024
_LEN = struct.Struct(">I")
MAX_JOIN_FRAME_BYTES = 16 * 1024  # what a node that is not a member yet may send in one frame
MAX_CONNECTIONS = 1024  # served at once; beyond, new connections are closed (and counted)
# What one node that is not a manager may hold of those (a worker uses a few: its session, its
# status link, logs asked of it), so that one member cannot take them all.
MAX_CONNECTIONS_PER_NODE = 64
# Connections from one address not authenticated yet (a handshake takes milliseconds; an agent
# opens a few at once), so that one address without credentials cannot hold them all.
MAX_HANDSHAKES_PER_IP = 64
# The largest frame a peer that is not a manager may send: its status reports, gossip state and
# log lines. Only managers send snapshots; 64 MiB frames from anyone were 64 MiB of buffer per
# connection and seconds of decoding on the event loop.
MAX_NON_MANAGER_FRAME_BYTES = 4 * 1024 * 1024
# A frame from a peer that is not a manager, over this size, is decoded in a thread (one at a
# time for the whole transport: `Transport.off_loop_decodes`). Decoding is pure Python, about
# 0.17 s a megabyte of small objects (statuses full of endpoints): one 4 MiB frame held the
# event loop 0.7 s, past the Raft election timeout, and a worker could send them back to back.
OFF_LOOP_DECODE_BYTES = 64 * 1024

# What resolving or connecting to a malformed address raises besides OSError: the IDNA codec's
# UnicodeError (a label over 63 bytes), ValueError (a NUL byte), OverflowError (a port beyond
# 65535). Addresses are checked where they enter (`wire.hosts`); these are caught where they are
# used too, as an OSError, so that no address can stop a task that handles a failed connection.
BAD_ADDRESS_ERRORS = (UnicodeError, ValueError, OverflowError)

# What a request/reply stream to a peer raises when the peer goes away, refuses it, times out
# or sends what does not decode: a caller that keeps a link retries on any of them.
LINK_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    RemoteProtocolError,
)
HANDSHAKE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class TcpLiveness:
    """When the kernel gives up on a peer that went silent: every cluster TCP connection, either
    way, sends keepalive probes after `idle_s` without traffic, every `interval_s`, and is
    dropped once its probes, or data it sent, stay unanswered for `dead_after_s`
    (TCP_USER_TIMEOUT). Without it, a loop that only receives (a Raft stream's server side, a
    session, a link's) waited for ever on a peer that lost power, or that closed its side while
    the network was cut: each such connection held its slot (`MAX_CONNECTIONS`, a worker's
    `MAX_CONNECTIONS_PER_NODE`) for good, until the node refused everyone; and data sent to such
    a peer stayed unacknowledged for the kernel's quarter of an hour of retransmissions. A live
    peer answers probes from its kernel, busy or idle. The user timeout also ends a connection
    whose reader has kept its window shut that long: a stream whose reader may pause, alive
    (logs followed into a paused pager), lifts it (`FramedStream.let_the_reader_pause`). Go's net
    package, hence etcd and Serf, keep connections alive so too (every 15 s)."""

    idle_s: int = 10
    interval_s: int = 5
    dead_after_s: float = 30.0

    def apply(self, stream: trio.SocketStream) -> None:
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, self.idle_s)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, self.interval_s)
        stream.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.dead_after_s * 1000)
        )


TCP_LIVENESS = TcpLiveness()

# The peer as this node sees it now (its certificate's identity, the role possibly lowered by
# what the state says since), or why it is refused now.
Admit = Callable[[PeerIdentity], "PeerIdentity | str"]


@dataclass(frozen=True)
class TlsConfig:
    """This node's side of the cluster channel: its TLS contexts (certificate, CA) and the policy
    that says which authenticated peers are still admitted (`security.peer_policy`)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    admit: Admit

    def __post_init__(self) -> None:
        # Every context the transport uses offers this release's protocol versions.
        for context in (self.server, self.client):
            context.set_alpn_protocols(protocol_version.alpn_protocols())


def parse_addr(text: str) -> Address:
    """`HOST:PORT` as an Address; a UsageError says what was expected. The host is an IP
    address (IPv6 in brackets or bare) or a DNS name, the port 1-65535 (`wire.hosts`: an
    address that passes cannot make a connect raise anything but OSError)."""
    host, sep, port = text.rpartition(":")
    if not sep or not is_host(host) or not port.isascii() or not port.isdigit():
        raise UsageError(f"invalid address {text!r}: expected HOST:PORT")
    if not is_port(int(port)):
        raise UsageError(f"invalid address {text!r}: the port must be 1-65535")
    return host, int(port)


_DATAGRAM_DOMAIN = b"swarmlet/datagram/1"
_ID_LEN = struct.Struct(">B")


@dataclass(frozen=True)
class DatagramAuth:
    """Every datagram says who sent it and proves it: ``[u8 n][sender id (n bytes)][Ed25519
    signature (64)][message]``, all inside the cluster key's seal. The signature covers a domain
    prefix, the sender id and the message, made with the sender's identity key (the one its
    certificate is for); `key_of` finds a member's public key (its Node record, or what the join
    reply listed), None for a node this member does not know, whose datagrams are dropped.

    The seal with the shared cluster key keeps datagrams private among members; the signature
    is what authenticates them, so a holder of the cluster key (any worker, a removed node)
    cannot speak for another node. The cluster key is replaced when a node is removed, so a
    removed node soon cannot read the datagrams either (`wire.datagram_keys`: its epochs)."""

    node_id: str
    signing_key: Ed25519PrivateKey
    key_of: Callable[[str], bytes | None]

    def envelope(self, body: bytes) -> bytes:
        sender = self.node_id.encode()
        head = _ID_LEN.pack(len(sender)) + sender
        return head + self.signing_key.sign(_DATAGRAM_DOMAIN + head + body) + body

    def open(self, data: bytes) -> tuple[str, bytes] | str:
        """(sender, message) of a datagram signed by a known member, or why it is dropped."""
        if len(data) < _ID_LEN.size:
            return "unsigned"
        (n,) = _ID_LEN.unpack_from(data)
        head_end = _ID_LEN.size + n
        if len(data) < head_end + SIGNATURE_BYTES:
            return "unsigned"
        try:
            sender = data[_ID_LEN.size : head_end].decode()
        except UnicodeDecodeError:
            return "unsigned"
        key = self.key_of(sender)
        if key is None:
            return "unknown_sender"
        body = data[head_end + SIGNATURE_BYTES :]
        signature = data[head_end : head_end + SIGNATURE_BYTES]
        try:
            check_signature(key, signature, _DATAGRAM_DOMAIN + data[:head_end] + body)
        except RemoteProtocolError:
            return "bad_signature"
        return sender, body


class Counters(Counter[str]):
    """Named event counts (dropped_*, datagrams_in, frames_out, ...), readable through the API."""


class FramedStream:
    """Length-prefixed messages over one stream: TLS with a known `peer` (the cluster channel),
    or sealed with `sealer` (the join channel, `peer` None). Sends are serialised by a lock."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        sealer: Sealer | None,
        aad: bytes,
        counters: Counters,
        *,
        peer: PeerIdentity | None = None,
        admit: Admit | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        buffered: bytes = b"",
        peer_protocol: int | None = None,
        off_loop_decodes: trio.CapacityLimiter | None = None,
    ) -> None:
        """`off_loop_decodes`: the threads a non-manager's large frame is decoded in (None: on
        the loop)."""
        self.stream = stream
        self.peer = peer  # as admitted at the last frame (see `_check_peer`)
        # The protocol both sides speak (the cluster channel's handshake settled it); None on
        # the join channel, which carries no version.
        self.peer_protocol = peer_protocol
        self._certified = peer  # as its certificate says
        self._sealer = sealer
        self._aad = aad
        self._counters = counters
        self._admit = admit
        self._max = max_frame_bytes
        self._buffer = bytearray(buffered)
        self._send_lock = trio.Lock()
        self._off_loop_decodes = off_loop_decodes
        self._check_peer()  # RemoteProtocolError (counted) if the policy refuses the peer

    def _frame(self, msg: Any) -> bytes:
        body = wire.encode(msg)
        return self._sealer.seal(body, self._aad) if self._sealer is not None else body

    def _check_peer(self) -> None:
        """Refuse to go on with a peer revoked (removed, demoted, expired) since it connected."""
        if self._admit is None or self._certified is None:
            return
        admitted = self._admit(self._certified)
        if isinstance(admitted, str):
            self._counters[f"refused_peer_{admitted}"] += 1
            raise RemoteProtocolError(f"peer {self._certified.node_id} is refused: {admitted}")
        self.peer = admitted

    async def send(self, msg: Any) -> None:
        self._check_peer()
        sealed = self._frame(msg)
        await self._write([_LEN.pack(len(sealed)), sealed])
        self._counters["frames_out"] += 1

    async def send_many(self, msgs: Sequence[Any]) -> None:
        """Send each of `msgs` as its own frame, all with one write (fewer system calls when a
        sender has several messages queued; the receiver sees the same frames as from `send`)."""
        self._check_peer()
        parts: list[bytes] = []
        for msg in msgs:
            sealed = self._frame(msg)
            parts.append(_LEN.pack(len(sealed)))
            parts.append(sealed)
        await self._write(parts)
        self._counters["frames_out"] += len(msgs)

    async def _write(self, parts: list[bytes]) -> None:
        """`parts` in order, with one write when they are small; a large frame (a snapshot of
        hundreds of megabytes) is written as it is rather than copied into one buffer."""
        async with self._send_lock:
            if sum(map(len, parts)) <= _JOINED_WRITE_BYTES:
                await self.stream.send_all(b"".join(parts))
                return
            for part in parts:
                await self.stream.send_all(part)

    def allow_snapshots(self) -> None:
        """Take frames up to `MAX_SNAPSHOT_FRAME_BYTES` from now on: this stream carries Raft
        from a manager. A peer that is not one is still held to `MAX_NON_MANAGER_FRAME_BYTES`."""
        self._max = max(self._max, MAX_SNAPSHOT_FRAME_BYTES)

    async def _read_exactly(self, n: int) -> bytes | None:
        while len(self._buffer) < n:
            wanted = min(n - len(self._buffer), _READ_BYTES)
            chunk = await self.stream.receive_some(max(65536, wanted))
            if not chunk:
                return None
            self._buffer += chunk
        with memoryview(self._buffer) as view, view[:n] as head:
            data = bytes(head)  # one copy, also of a snapshot's hundreds of megabytes
        del self._buffer[:n]
        return data

    async def receive(self, *, expect: tuple[type[Any], ...] | None = None) -> Any | None:
        """The next message, or None at a clean end of stream.

        Raises RemoteProtocolError (after counting it) for a bad frame: the caller closes the
        connection, since the framing can no longer be trusted.
        """
        header = await self._read_exactly(_LEN.size)
        if header is None:
            if self._buffer:
                self._counters["dropped_frame_truncated"] += 1
                raise RemoteProtocolError("connection closed inside a frame header")
            return None
        (length,) = _LEN.unpack(header)
        if length > MAX_NON_MANAGER_FRAME_BYTES:
            # Admitted again before a size only a manager may send is read: a manager demoted
            # since the last frame is held to a worker's limit (the check after the body would
            # come after up to 512 MiB of it).
            self._check_peer()
        limit = self._max
        if self.peer is not None and not self.peer.is_manager:
            limit = min(limit, MAX_NON_MANAGER_FRAME_BYTES)
        if length > limit:
            self._counters["dropped_frame_oversized"] += 1
            raise RemoteProtocolError(f"frame of {length} bytes exceeds {limit}")
        body = await self._read_exactly(length)
        if body is None:
            self._counters["dropped_frame_truncated"] += 1
            raise RemoteProtocolError("connection closed inside a frame")
        self._check_peer()
        try:
            plain = self._sealer.open(body, self._aad) if self._sealer is not None else body
            if self._decodes_off_loop(len(plain)):
                msg = await off_loop.run(
                    functools.partial(wire.decode, plain, expect=expect), self._off_loop_decodes
                )
            else:
                msg = wire.decode(plain, expect=expect, max_bytes=limit)
        except RemoteProtocolError:
            self._counters["dropped_frame_invalid"] += 1
            raise
        self._counters["frames_in"] += 1
        return msg

    def let_the_reader_pause(self) -> None:
        """Lift the user timeout (`TcpLiveness`) of this stream's socket: its reader may keep
        its window shut for long, alive. A dead peer still ends it (keepalive, retransmissions)."""
        if isinstance(self.stream, TlsSocketStream):
            self.stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 0)

    def _decodes_off_loop(self, size: int) -> bool:
        peer = self.peer
        return (
            size > OFF_LOOP_DECODE_BYTES
            and self._off_loop_decodes is not None
            and peer is not None
            and not peer.is_manager
        )

    async def aclose(self) -> None:
        await self.stream.aclose()


StreamHandler = Callable[[FramedStream, Address], Awaitable[None]]
JoinHandler = Callable[[trio.SocketStream, bytes, Address], Awaitable[None]]
# (source address, decoded message, the member that signed it: None without `DatagramAuth`)
DatagramHandler = Callable[[Address, Any, str | None], None]


class _Shares:
    """Connections held by each key (a node id, a source address), at most `most` each."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._held: dict[str, int] = {}  # only keys that hold some

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    @contextlib.contextmanager
    def one(self, key: str) -> Iterator[bool]:
        """One more for `key` for the block (True), unless it holds its share (False: none
        taken)."""
        held = self.held(key)
        if held >= self.most:
            yield False
            return
        self._held[key] = held + 1
        try:
            yield True
        finally:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]


class Transport:
    """The agent's UDP socket and TCP listener (same port), and outgoing connections."""

    def __init__(
        self,
        bind: Address,
        message_key: bytes,
        tls: TlsConfig,
        *,
        connect_timeout_s: float = 2.0,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_node: int = MAX_CONNECTIONS_PER_NODE,
        max_handshakes_per_ip: int = MAX_HANDSHAKES_PER_IP,
        counters: Counters | None = None,
        datagram_auth: DatagramAuth | None = None,
        datagram_keys: DatagramKeys | None = None,
        liveness: TcpLiveness = TCP_LIVENESS,
    ):
        self.bind = bind
        self.liveness = liveness
        self.counters = counters if counters is not None else Counters()
        # Node id -> the protocol of the last stream with it, either way (what the leader's
        # voter policy knows of each node's release).
        self.peer_protocols: dict[str, int] = {}
        # The cluster key's epochs (an agent's follow its key ring); without them, `message_key`
        # alone, as epoch 0.
        self.datagram_keys = datagram_keys or DatagramKeys(0, message_key)
        self.tls = tls
        self._udp: trio.socket.SocketType | None = None
        self._connect_timeout_s = connect_timeout_s
        self._handshake_timeout_s = handshake_timeout_s
        self._max_connections = max_connections
        self._open_connections = 0
        self._per_node = _Shares(max_connections_per_node)  # by node id (its certificate)
        self._greeting = _Shares(max_handshakes_per_ip)  # not authenticated, by source address
        # One thread decodes the large frames of the peers that are not managers, in turn: so
        # many workers' frames cost the loop at most one thread's share of the GIL.
        self.off_loop_decodes = trio.CapacityLimiter(1)
        self._warned_protocol: set[str] = set()  # peers (authenticated node ids) refused so
        # None: datagrams are only sealed (transports in tests of other layers); an agent
        # always signs, and then drops every datagram that is not signed by a known member.
        self.datagram_auth = datagram_auth

    def set_key(self, message_key: bytes) -> None:
        self.datagram_keys = DatagramKeys(0, message_key)

    def set_tls(self, tls: TlsConfig) -> None:
        """A renewed certificate: new connections present it (open ones keep theirs)."""
        self.tls = tls

    # ------------------------------------------------------------------------------- UDP

    async def open_udp(self) -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        # A burst (a gossip round to several members, push-pull fan-in) must not overflow the
        # kernel's default ~200 KiB buffer while the event loop is busy for a few milliseconds.
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4 * 1024 * 1024)
        await sock.bind(self.bind)
        self._udp = sock

    async def send_datagram(self, addr: Address, msg: Any) -> bool:
        """Sign, seal and send; False (and counted) if it could not be sent (UDP: loss is
        normal)."""
        assert self._udp is not None, "open_udp first"
        body = wire.encode(msg)
        if self.datagram_auth is not None:
            body = self.datagram_auth.envelope(body)
        sealed = self.datagram_keys.seal(body)
        if len(sealed) > MAX_DATAGRAM_BYTES:
            self.counters["dropped_datagram_out_oversized"] += 1
            return False
        try:
            await self._udp.sendto(sealed, addr)
        except (OSError, *BAD_ADDRESS_ERRORS):
            self.counters["datagram_send_errors"] += 1
            return False
        self.counters["datagrams_out"] += 1
        self.counters["datagram_bytes_out"] += len(sealed)  # as sent: signed and sealed
        return True

    async def serve_udp(self, handler: DatagramHandler) -> None:
        assert self._udp is not None, "open_udp first"
        while True:
            data, addr = await self._udp.recvfrom(MAX_DATAGRAM_BYTES + 1)
            self.counters["datagrams_in"] += 1
            self.counters["datagram_bytes_in"] += len(data)  # as received, dropped ones too
            body = self.datagram_keys.open(data, time.monotonic())
            if isinstance(body, str):  # invalid, stale_epoch, unknown_epoch
                self.counters[f"dropped_datagram_{body}"] += 1
                log.debug("dropped datagram from %s: %s", addr, body)
                continue
            signer = None
            if self.datagram_auth is not None:
                opened = self.datagram_auth.open(body)
                if isinstance(opened, str):
                    self.counters[f"dropped_datagram_{opened}"] += 1
                    continue
                signer, body = opened
            try:
                msg = wire.decode(body)
            except RemoteProtocolError as exc:
                self.counters["dropped_datagram_invalid"] += 1
                log.debug("dropped datagram from %s: %s", addr, exc)
                continue
            handler((addr[0], addr[1]), msg, signer)

    # ------------------------------------------------------------------------------- TCP

    async def serve_tcp(
        self,
        on_stream: StreamHandler,
        on_join: JoinHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def handle(stream: trio.SocketStream) -> None:
            addr: Address = ("?", 0)
            if self._open_connections >= self._max_connections:
                self.counters["refused_connection_limit"] += 1
                await stream.aclose()
                return
            self._open_connections += 1
            try:
                # Inside the try: a connection reset before we get here raises ENOTCONN.
                remote = stream.socket.getpeername()
                addr = (remote[0], remote[1])
                self.liveness.apply(stream)
                # Anyone may start a handshake: one address holds a share of the connections
                # while it has not authenticated (it could hold all, a handshake at a time).
                with self._greeting.one(addr[0]) as taken:
                    if not taken:
                        self.counters["refused_connection_limit_ip"] += 1
                        return
                    greeted = await self._greet(stream)
                if isinstance(greeted, FramedStream):
                    async with greeted.stream:  # it holds the socket now
                        await self._serve_peer(greeted, addr, on_stream)
                elif greeted is not None:
                    await on_join(stream, greeted, addr)
            except RemoteProtocolError as exc:
                log.debug("closed connection from %s: %s", addr, exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.counters["connections_broken"] += 1
            finally:
                self._open_connections -= 1
                await stream.aclose()

        listeners = await trio.open_tcp_listeners(self.bind[1], host=self.bind[0])
        task_status.started()
        await trio.serve_listeners(handle, listeners)

    async def _greet(self, stream: trio.SocketStream) -> FramedStream | bytes | None:
        """What comes before authentication, within one deadline: the channel byte, then the
        TLS handshake (the peer's stream) or the join key id (its bytes); None (counted) if the
        peer does not get that far."""
        deadline = trio.current_time() + self._handshake_timeout_s
        channel = b""
        with trio.move_on_at(deadline) as hello:
            channel = await stream.receive_some(1)
        if hello.cancelled_caught:
            self.counters["refused_connection_hello_timeout"] += 1
        if not channel:
            return None
        if channel == CHANNEL_CLUSTER:
            return await self._accept_tls(stream, deadline)
        if channel == CHANNEL_JOIN:
            head = None
            with trio.move_on_at(deadline):
                head = await _receive_exactly(stream, KEY_ID_BYTES)
            if head is None:
                self.counters["refused_connection_hello_timeout"] += 1
            return head
        self.counters["dropped_connection_bad_channel"] += 1
        return None

    async def _serve_peer(
        self, framed: FramedStream, addr: Address, on_stream: StreamHandler
    ) -> None:
        """`on_stream`, unless the peer, not a manager, already holds its share of the
        connections (the threat model's peers are workers; a manager may follow the logs of
        many tasks at once, a connection each)."""
        if framed.peer is None or framed.peer.is_manager:
            await on_stream(framed, addr)
            return
        with self._per_node.one(framed.peer.node_id) as taken:
            if not taken:
                self.counters["refused_connection_limit_node"] += 1
                return
            await on_stream(framed, addr)

    async def _accept_tls(self, stream: trio.SocketStream, deadline: float) -> FramedStream | None:
        """The server side of the handshake, within its deadline; None (counted) if the peer
        does not complete it with a certificate the CA signed and the policy admits."""
        tls = self.tls
        with trio.move_on_at(deadline):
            try:
                secure = await TlsSocketStream.handshake(stream, tls.server, server_side=True)
            except trio.BrokenResourceError as exc:
                self.counters["refused_tls_handshake"] += 1
                log.debug("TLS handshake failed: %s", exc.__cause__ or exc)
                return None
            try:
                peer = self._authenticate(secure)
                return self._cluster_stream(secure, peer, tls)
            except BaseException:
                await secure.aclose()
                raise
        self.counters["refused_tls_handshake_timeout"] += 1
        return None

    def _cluster_stream(
        self, secure: TlsSocketStream, peer: PeerIdentity, tls: TlsConfig
    ) -> FramedStream:
        """The framed stream over an authenticated TLS connection with `peer`, either side,
        admitted by the policy of `tls`, the configuration of its handshake (`set_tls` may have
        replaced the transport's meanwhile): RemoteProtocolError (counted) if the two share no
        protocol or the policy refuses it."""
        return FramedStream(
            secure,
            None,
            b"",
            self.counters,
            peer=peer,
            admit=tls.admit,
            peer_protocol=self._negotiated(secure, peer),
            off_loop_decodes=self.off_loop_decodes,
        )

    def _authenticate(self, secure: TlsSocketStream) -> PeerIdentity:
        """The peer's identity as its certificate (verified in the handshake) says; whether it
        is admitted is for the `FramedStream` to ask, as it does again at every frame."""
        der = secure.getpeercert()
        if not der:  # cannot happen with CERT_REQUIRED; never assume it
            self.counters["refused_peer_no_certificate"] += 1
            raise RemoteProtocolError("the peer presented no certificate")
        try:
            peer = identity_of_der(der)
        except RemoteProtocolError:
            self.counters["refused_peer_bad_certificate"] += 1
            raise
        return peer

    def _negotiated(self, secure: TlsSocketStream, peer: PeerIdentity) -> int:
        """The protocol the handshake settled with `peer`; RemoteProtocolError (counted, and
        logged the first time for this peer: senders reconnect every fraction of a second) if
        the two share none."""
        version = protocol_version.negotiated(secure.selected_alpn_protocol())
        if isinstance(version, int):
            # Streams by protocol (`swarmlet status`): whether peers of an older one remain.
            self.counters[f"streams_protocol_{version}"] += 1
            self.peer_protocols[peer.node_id] = version
            return version
        self.counters["refused_peer_protocol"] += 1
        if peer.node_id not in self._warned_protocol:
            self._warned_protocol.add(peer.node_id)
            log.warning(
                "refusing node %s: it %s (this node speaks %d..%d)",
                peer.node_id,
                version,
                protocol_version.OLDEST_PEER_PROTOCOL,
                protocol_version.PROTOCOL_VERSION,
            )
        raise RemoteProtocolError(f"node {peer.node_id} {version}")

    async def connect(
        self, addr: Address, node_id: str | None = None, *, manager: bool = False
    ) -> FramedStream:
        """A cluster-channel connection to a peer, authenticated both ways. With `node_id`,
        the peer must be that node (whoever now answers at an address is not trusted for it);
        with `manager`, its certificate must say manager (what a node says of its own role in
        gossip is its own word: a worker could claim to be one). Raises OSError or
        trio.TooSlowError if it cannot be reached, trio.BrokenResourceError if the TLS
        handshake fails, RemoteProtocolError if the peer is not admitted."""
        tls = self.tls
        with trio.fail_after(self._connect_timeout_s):
            # From our own address: peers (and firewalls) see connections come from the address
            # we advertise, not whatever source the kernel would pick (127.0.0.1 on loopback).
            try:
                stream = await trio.open_tcp_stream(addr[0], addr[1], local_address=self.bind[0])
            except BAD_ADDRESS_ERRORS as exc:
                raise OSError(f"{addr!r} is not an address: {exc}") from None
        try:
            self.liveness.apply(stream)
            await stream.send_all(CHANNEL_CLUSTER)
            with trio.fail_after(self._handshake_timeout_s):
                secure = await TlsSocketStream.handshake(stream, tls.client, server_side=False)
        except BaseException:
            await stream.aclose()  # nothing left to close once the handshake took the socket
            raise
        try:
            peer = self._authenticate(secure)
            if node_id is not None and peer.node_id != node_id:
                self.counters["refused_peer_wrong_node"] += 1
                raise RemoteProtocolError(f"{addr[0]}:{addr[1]} is {peer.node_id}, not {node_id}")
            framed = self._cluster_stream(secure, peer, tls)
            # As admitted, not as the certificate says: a demoted manager's certificate says
            # manager until it expires, and the policy lowers it to what the state says.
            if manager and (framed.peer is None or not framed.peer.is_manager):
                self.counters["refused_peer_not_manager"] += 1
                raise RemoteProtocolError(f"{peer.node_id} is not a manager")
            return framed
        except BaseException:
            await secure.aclose()
            raise


async def _receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


JOIN_ACCEPTED = b"\x00"
JOIN_REFUSED = b"\x01"


async def open_join_stream(addr: Address, join_key: bytes, key_id: bytes) -> FramedStream | None:
    """The joiner's side of the join channel; None if the cluster does not know the token."""
    stream = await trio.open_tcp_stream(addr[0], addr[1])
    TCP_LIVENESS.apply(stream)
    await stream.send_all(CHANNEL_JOIN + key_id)
    status = await _receive_exactly(stream, 1)
    if status != JOIN_ACCEPTED:
        await stream.aclose()
        return None
    return FramedStream(stream, Sealer(join_key), AAD_JOIN, Counters())


def join_stream(stream: trio.SocketStream, join_key: bytes, counters: Counters) -> FramedStream:
    """The accepting side of the join channel, once the key id has been matched to a token."""
    # A joiner is not a member yet: it sends a request and a proof, each well under a kilobyte.
    return FramedStream(
        stream, Sealer(join_key), AAD_JOIN, counters, max_frame_bytes=MAX_JOIN_FRAME_BYTES
    )
