"""Short port syntax -> long form (docker/go-connections ``nat.ParsePortSpec`` and docker/cli
``opts.ConvertPortToPortConfig``, as called by ``loader.toServicePortConfigs``).

``"127.0.0.1:5000-5001:5000-5001/udp"`` becomes one long-form dict per container port, keys in
docker's order (mode, target, published, protocol), published omitted when 0. Addresses are
checked, then ignored with the warning docker prints (swarm services listen on 0.0.0.0).
"""

from __future__ import annotations

import ipaddress
from typing import Any


def _parse_port_range(text: str) -> tuple[int, int]:
    # nat.ParsePortRange
    if not text:
        raise ValueError("empty string specified for ports")
    start_text, sep, end_text = text.partition("-")
    if not sep:
        end_text = start_text
    start, end = _parse_uint16(start_text), _parse_uint16(end_text)
    if end < start:
        raise ValueError(f"invalid range specified: {text}")
    return start, end


def _parse_uint16(text: str) -> int:
    if not text.isdigit() or int(text) > 0xFFFF:
        raise ValueError(f"invalid port: {text}")
    return int(text)


def _split_parts(raw: str) -> tuple[str, str, str]:
    parts = raw.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _split_proto(raw: str) -> tuple[str, str]:
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1 or not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def parse_port_spec(raw: str) -> list[tuple[str, str, str, str]]:
    """nat.ParsePortSpec: ``(container_port, proto, host_ip, host_port)`` per container port."""
    ip, host_port, container = _split_parts(raw)
    proto, container = _split_proto(container)
    if ip.startswith("["):
        ip = ip[1:].split("]", 1)[0]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError as exc:
            raise ValueError(f"invalid IP address: {ip}") from exc
    if not container:
        raise ValueError(f"no port specified: {raw}<empty>")
    try:
        start, end = _parse_port_range(container)
    except ValueError as exc:
        raise ValueError(f"invalid containerPort: {container}") from exc
    host_start = host_end = 0
    if host_port:
        try:
            host_start, host_end = _parse_port_range(host_port)
        except ValueError as exc:
            raise ValueError(f"invalid hostPort: {host_port}") from exc
    if host_port and (end - start) != (host_end - host_start) and end != start:
        raise ValueError(
            f"invalid ranges specified for container and host Ports: {container} and {host_port}"
        )
    if proto.lower() not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid proto: {proto}")
    out = []
    for i in range(end - start + 1):
        binding = str(host_start + i) if host_port else ""
        if start == end and host_start != host_end:
            binding = f"{binding}-{host_end}"
        out.append((str(start + i), proto.lower(), ip, binding))
    return out


def short_port_to_long(raw: str, warnings: list[str]) -> list[dict[str, Any]]:
    """loader.toServicePortConfigs: ports sorted by "port/proto" string, ranges expanded."""
    by_key: dict[str, list[tuple[str, str]]] = {}  # "port/proto" -> (host_ip, host_port), in order
    for port, proto, host_ip, host_port in parse_port_spec(raw):
        by_key.setdefault(f"{port}/{proto}", []).append((host_ip, host_port))
    out: list[dict[str, Any]] = []
    for key in sorted(by_key):
        port, proto = key.split("/")
        for host_ip, host_port in by_key[key]:
            if host_ip and not ipaddress.ip_address(host_ip).is_unspecified:
                warnings.append(
                    f"ignoring IP-address ({host_ip}:{host_port}:{key}) "
                    "service will listen on '0.0.0.0'"
                )
            try:
                first, last = _parse_port_range(host_port)
            except ValueError:
                if host_port:
                    raise ValueError(
                        f"invalid hostport binding ({host_port}) for port ({port})"
                    ) from None
                first, last = 0, 0
            for published in range(first, last + 1):
                entry: dict[str, Any] = {"mode": "ingress", "target": int(port)}
                if published:
                    entry["published"] = published
                entry["protocol"] = proto
                out.append(entry)
    return out
