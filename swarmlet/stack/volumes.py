"""Short volume syntax -> long form (docker/cli ``cli/compose/loader/volume.go`` ParseVolume).

``"./data:/srv:ro"`` -> ``{type: bind, source: ./data, target: /srv, read_only: true}``;
paths are made absolute later (``normalize``), since that needs the working dir and HOME.
"""

from __future__ import annotations

from typing import Any

_PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
_END = "\0"


def _is_windows_drive(buffer: list[str], char: str) -> bool:
    return char == ":" and len(buffer) == 1 and buffer[0].isalpha()


def _is_file_path(source: str) -> bool:
    if source in (".", ".."):
        return True
    if source[:1] in (".", "/", "~") or source.startswith("\\\\"):
        return True
    return len(source) > 1 and source[0].isalpha() and source[1] == ":"


def parse_volume(spec: str) -> dict[str, Any]:
    """ParseVolume; raise ValueError("invalid spec: ...") like docker."""
    volume: dict[str, Any] = {}
    if not spec:
        raise ValueError("invalid empty volume spec")
    if len(spec) <= 2:
        return {"type": "volume", "target": spec}
    buffer: list[str] = []
    for char in spec + _END:
        if _is_windows_drive(buffer, char):
            buffer.append(char)
        elif char in (":", _END):
            _populate(char, "".join(buffer), volume, spec)
            buffer = []
        else:
            buffer.append(char)
    source = volume.get("source", "")
    kind = "bind" if source and _is_file_path(source) else "volume"
    ordered: dict[str, Any] = {"type": kind}
    for key in ("source", "target", "read_only", "bind", "volume"):
        if key in volume:
            ordered[key] = volume[key]
    return ordered


def _populate(char: str, text: str, volume: dict[str, Any], spec: str) -> None:
    if not text:
        raise ValueError(f"invalid spec: {spec}: empty section between colons")
    if "source" not in volume and char == _END:
        volume["target"] = text
        return
    if "source" not in volume:
        volume["source"] = text
        return
    if "target" not in volume:
        volume["target"] = text
        return
    if char == ":":
        raise ValueError(f"invalid spec: {spec}: too many colons")
    for option in text.split(","):
        if option == "ro":
            volume["read_only"] = True
        elif option == "rw":
            volume.pop("read_only", None)
        elif option == "nocopy":
            volume["volume"] = {"nocopy": True}
        elif option in _PROPAGATIONS:
            volume["bind"] = {"propagation": option}
        # docker ignores unknown options (e.g. "z", "cached")
