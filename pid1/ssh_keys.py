"""SSH public keys as text lines: checked, and fingerprinted as `ssh-keygen -l` prints them.

A line is `[options] TYPE BASE64 [comment]` (authorized_keys; a .pub file
has no options). The base64 blob is the key in SSH's wire format: it starts
with its own type as a length-prefixed string, which is how a line whose
type and data disagree is caught. The fingerprint is OpenSSH's default: the
SHA-256 of the blob in base64 without padding, with the key's size in bits
and its kind, e.g. `256 SHA256:3Uzp/... root@vm (ED25519)`.

Nothing here reads files: the callers read what they are given bounded
(a host key's .pub is written by dom0, pid1.untrusted).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)  # fmt: skip
MAX_LINE = 16384  # an RSA-16384 key is ~2.8 KB of base64; sshd's own line limit is 8 KB
# ssh-keygen's names for each kind
KIND = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "sk-ssh-ed25519@openssh.com": "ED25519-SK",
        "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK"}  # fmt: skip


class KeyLineError(ValueError):
    """Why a line is not a public key."""


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: bytes
    comment: str

    @property
    def kind(self) -> str:
        return KIND.get(self.type, "ECDSA")

    @property
    def bits(self) -> int:
        if self.type == "ssh-rsa":
            _, rest = _string(self.blob)
            _exponent, rest = _string(rest)
            modulus, _ = _string(rest)
            return int.from_bytes(modulus, "big").bit_length()
        if "nistp" in self.type:
            return int(self.type.split("nistp")[1].split("@")[0])
        return 256  # ed25519

    @property
    def sha256(self) -> str:
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")

    def fingerprint(self) -> str:
        """As `ssh-keygen -l -f FILE` prints it."""
        return f"{self.bits} {self.sha256} {self.comment or 'no comment'} ({self.kind})"


def _string(data: bytes) -> tuple[bytes, bytes]:
    """One SSH wire-format string (uint32 length, bytes) and what follows."""
    if len(data) < 4:
        raise KeyLineError("the key's data ends early")
    (length,) = struct.unpack(">I", data[:4])
    if length > len(data) - 4:
        raise KeyLineError("the key's data ends early")
    return data[4 : 4 + length], data[4 + length :]


def parse_key(line: str) -> PublicKey:
    """The key in an authorized_keys or .pub line; KeyLineError saying why not.
    Options before the type (`from="..." ssh-ed25519 AAAA...`) are allowed, as sshd reads them."""
    if not isinstance(line, str) or "\n" in line.strip() or len(line) > MAX_LINE:
        raise KeyLineError("not one line of text")
    words = line.split()
    for position, word in enumerate(words[:-1]):
        if word in KEY_TYPES:
            try:
                blob = base64.b64decode(words[position + 1], validate=True)
            except (binascii.Error, ValueError):
                raise KeyLineError(f"the {word} key is not base64") from None
            try:
                own_type, _ = _string(blob)
            except KeyLineError:
                own_type = b""
            if own_type != word.encode():
                raise KeyLineError(f"the {word} key's data does not match its type")
            key = PublicKey(word, blob, " ".join(words[position + 2 :]))
            try:
                key.bits  # noqa: B018  (an RSA blob too short to hold its modulus is caught here)
            except KeyLineError as exc:
                raise KeyLineError(f"the {word} key: {exc}") from None
            return key
    raise KeyLineError(f"no key type ({', '.join(KEY_TYPES[:3])}, ...) in {line.strip()[:40]!r}")


def key_problem(line: object) -> str | None:
    """Why `line` is not an authorized_keys line, or None."""
    try:
        parse_key(line)  # type: ignore[arg-type]
    except KeyLineError as exc:
        return str(exc)
    return None


def authorized_keys(text: str) -> tuple[list[str], list[str]]:
    """(the key lines, a warning for each other non-comment line) of an authorized_keys text."""
    keys: list[str] = []
    warnings: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        problem = key_problem(line)
        if problem is None:
            keys.append(line.strip())
        else:
            warnings.append(f"line {number}: {problem}; skipped")
    return keys, warnings
