"""FTP replies and their wire encoding (RFC 959 section 4.2).

Invariant: an encoded reply always ends with CRLF; every line of a multi-line reply that
starts with a digit is indented by one space so it cannot be mistaken for the final line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply code and one or more text lines."""

    code: int
    lines: tuple[str, ...]

    def __init__(self, code: int, *lines: str) -> None:
        object.__setattr__(self, "code", code)
        if len(lines) == 1:
            line = lines[0]
            if "\n" not in line and "\r" not in line:  # the usual case: one plain line
                object.__setattr__(self, "lines", lines)
                return
        flat: list[str] = []
        for line in lines or ("",):
            flat.extend(line.replace("\r", "").split("\n"))
        object.__setattr__(self, "lines", tuple(flat))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def encode(self) -> bytes:
        return encode_reply(self.code, self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def encode_reply(code: int, lines: tuple[str, ...] | list[str]) -> bytes:
    """Encode one reply; multi-line replies use the ``code-`` ... ``code `` form."""
    if len(lines) <= 1:
        text = lines[0] if lines else ""
        return f"{code} {text}\r\n".encode("utf-8", "surrogateescape")
    out = [f"{code}-{lines[0]}"]
    for middle in lines[1:-1]:
        # RFC 959 4.2: an inner line starting with digits must not look like a final line.
        out.append(f" {middle}" if middle[:1].isdigit() else middle)
    out.append(f"{code} {lines[-1]}")
    return ("\r\n".join(out) + "\r\n").encode("utf-8", "surrogateescape")


def quote_path(path: str) -> str:
    """Quote a path for 257 replies (RFC 959 appendix II: embedded quotes are doubled)."""
    return '"' + path.replace('"', '""') + '"'
