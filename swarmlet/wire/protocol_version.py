"""The version of the protocol between agents, and where it travels (issue #18).

Protocol 1 is every release before versioning; this release speaks 5, and accepts peers of
`OLDEST_PEER_PROTOCOL` up to `PROTOCOL_VERSION`, so that a cluster keeps working while its
agents are upgraded one at a time. Protocol 2 sends the same messages as 1: it only adds the
version itself. Protocol 3 adds workers' sessions (`node.worker_sessions`): a new first frame,
`SessionHello`, sent only to a peer of 3, and a manager of 3 takes a worker of 3 out of the Raft
group (`leader.voters`); to a peer of 1 or 2 it speaks exactly as they do. Protocol 4 adds a
command, `Once` (a write applied once however often it is retried: `node.forwarding`), sent to
a leader of 4 and proposed only while every member of the Raft group is of 4. Protocol 5 adds
`AppendEntries.commit_only` (an append that asks for no answer: `raft.core`), set only on a
stream to a peer of 5.

Where the version travels, and why there:
  * Cluster channel (TLS): in the handshake, as ALPN protocol ids (RFC 7301). Each side offers
    ``swarmlet/<v>`` for every version it speaks, newest first, then the bare ``swarmlet``, which
    both sides list last: the server picks the first of its own ids that the client offers. A
    protocol-1 agent sets no ALPN, so its server ignores the offer and its client offers nothing:
    either way nothing is selected, which is how a peer of protocol 1 is recognised. That is the
    only compatible place: a protocol-1 agent refuses a stream message with more fields than it
    knows (`codec`), and a first frame it does not expect. The versions are settled before the
    first frame, so nothing is misparsed: when only the bare ``swarmlet`` is common, both
    sides are versioned but share no version, and the stream is refused (counted, logged with
    the peer's authenticated node id) before any frame is read.
  * Join channel and datagrams: no version. The join channel's first bytes, the reply byte and
    the sealed datagram envelope (``[u8 n][sender id][signature][message]``, the signature over
    the domain ``swarmlet/datagram/1``) are parsed exactly by protocol-1 agents, and any added
    byte, field or frame makes them drop the datagram or refuse the join. Their messages are
    therefore frozen at protocol 1's fields until protocol 1 leaves the window; a new datagram
    format needs a new signature domain (``swarmlet/datagram/<v>``), which an agent that does
    not know it drops as `bad_signature`, never misparses.

What a version means on a stream: `FramedStream.peer_protocol` is the version both sides speak on
it. A message that gains a field (appended, with a default: the codec lets an older peer's
messages lack it) may carry that field only to a peer whose protocol knows it; an older peer
refuses a message with more fields than it knows. Fields declared with `codec.appended` are
left out while they hold their default, so what the new release does not use reaches an older
peer in protocol 1's shape; a feature that sets them (or a new command, or the epoch datagrams
of a rotated cluster key) waits until every agent is upgraded (README, "Upgrading").

Pure: no I/O; `transport` offers these ids and acts on what was selected.
"""

from __future__ import annotations

PROTOCOL_VERSION = 5
# The window: this release and every one before it. Protocol 2 only added the version itself,
# so an agent of protocol 1 is spoken to exactly as one of 2, and 3 to 5 add only what is sent
# to a peer that speaks it: keeping them costs nothing, and a cluster of the release before
# versioning can still be upgraded one agent at a time.
OLDEST_PEER_PROTOCOL = 1
SESSIONS_SINCE = 3  # the first protocol whose workers take their state from sessions
ONCE_SINCE = 4  # the first protocol that applies `state.commands.Once`
COMMIT_ONLY_SINCE = 5  # the first protocol that knows `raft.messages.AppendEntries.commit_only`
# Protocol 1 predates versioning: its agents set no ALPN.
UNVERSIONED_PROTOCOL = 1
_PREFIX = "swarmlet/"
# Offered and listed last by every versioned agent: selected only when no version is common.
VERSIONED_MARKER = "swarmlet"


def alpn_protocols() -> list[str]:
    """What this agent offers (a client) and accepts (a server), in its order of preference:
    each version of the window that has an ALPN id, newest first, then the marker."""
    versions = range(PROTOCOL_VERSION, max(OLDEST_PEER_PROTOCOL, UNVERSIONED_PROTOCOL + 1) - 1, -1)
    return [f"{_PREFIX}{v}" for v in versions] + [VERSIONED_MARKER]


def negotiated(selected: str | None) -> int | str:
    """The protocol of a stream whose handshake selected `selected` (`selected_alpn_protocol`),
    or why it is refused (a message for the operator)."""
    if selected is None:
        if OLDEST_PEER_PROTOCOL <= UNVERSIONED_PROTOCOL:
            return UNVERSIONED_PROTOCOL
        return (
            f"speaks protocol {UNVERSIONED_PROTOCOL} (a release before versioning), older than "
            f"{OLDEST_PEER_PROTOCOL}, the oldest this release accepts: upgrade it"
        )
    if selected.startswith(_PREFIX) and selected[len(_PREFIX) :].isdigit():
        version = int(selected[len(_PREFIX) :])
        if OLDEST_PEER_PROTOCOL <= version <= PROTOCOL_VERSION:
            return version
    # The marker (or an id this side never offered): versioned, but no version in common.
    return (
        f"speaks no protocol in {OLDEST_PEER_PROTOCOL}..{PROTOCOL_VERSION}, the ones this release "
        "speaks: it runs a release more than one protocol version away (newer, unless it "
        "refuses us as too old); upgrade the older of the two one release at a time"
    )
