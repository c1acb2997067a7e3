"""DKIM signing of platform mail (dkimpy) and the DNS records an operator publishes for it.

Every copy the gateway relays for a platform-domain identity is signed for PLATFORM_DOMAIN with selector
DKIM_SELECTOR (default ``identitybot``). The key is DKIM_PRIVATE_KEY (a PEM file) or, when that is unset, a 2048-bit
RSA key generated once in DATA_DIR (mode 0600). Sign LAST, after every header change, over the exact bytes that go
on the wire, and send those bytes as they are (bot/mail/copies.py), never re-serialised: `send_message(EmailMessage)`
flattens again and may re-encode 8bit parts, which breaks the body hash.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dkim  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

log = logging.getLogger(__name__)

DEFAULT_SELECTOR = "identitybot"
KEY_FILE_NAME = "dkim.key"
KEY_BITS = 2048
MIN_KEY_BITS = 1024  # dkimpy's minkey default, and what receivers still accept; generate 2048
TTL = 3600

# Headers we sign when present. From is mandatory (RFC 6376 5.4). List-Unsubscribe(-Post) must be covered by the
# signature for RFC 8058 one-click unsubscribe to be honoured (Gmail/Yahoo bulk-sender rules).
SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
# Listed once more in h= than they occur ("over-signing"): a From or Subject added later breaks the signature.
OVERSIGNED_HEADERS: tuple[str, ...] = ("From", "Subject")


class DkimKeyError(Exception):
    """The DKIM key can't be used; str() is a one-line message for the operator."""


# ---------------------------------------------------------------------------------------------------------------
# Keys


def generate_key() -> bytes:
    """A new 2048-bit RSA key as PKCS#1 PEM ("BEGIN RSA PRIVATE KEY", LF line ends)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return _pem(key)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    # PKCS#1 rather than PKCS#8: dkimpy < 1.1, OpenDKIM tooling and older milters read only PKCS#1.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _load_rsa(pem: bytes, source: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise DkimKeyError(f"{source}: the DKIM key is encrypted; give an unencrypted PEM key") from None
    except ValueError:
        raise DkimKeyError(f"{source}: not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError(f"{source}: the DKIM key must be an RSA key (ed25519 is not widely verified yet)")
    if key.key_size < MIN_KEY_BITS:
        raise DkimKeyError(f"{source}: the DKIM key has {key.key_size} bits; use at least 2048")
    return key


def normalize_key(pem: bytes, source: str = "DKIM key") -> bytes:
    """Validate a PEM private key and return it as PKCS#1 PEM with LF line ends.

    dkimpy parses PEM with a regex that needs LF ("--\\n...\\n--"): a key file saved with CRLF fails with "Private
    key not found". It also can't read encrypted keys. Round-tripping through `cryptography` fixes both up front."""
    return _pem(_load_rsa(pem, source))


def load_key(path: Path) -> bytes:
    """The key in an operator-given file (DKIM_PRIVATE_KEY). Never creates it: a missing file is a config error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DkimKeyError(f"DKIM_PRIVATE_KEY: {path} does not exist") from None
    except OSError as exc:
        raise DkimKeyError(f"DKIM_PRIVATE_KEY: can't read {path} ({exc.strerror})") from None
    return normalize_key(data, f"DKIM_PRIVATE_KEY ({path})")


def load_or_create_key(path: Path) -> bytes:
    """The key at `path`, generated on first use (2048-bit RSA, mode 0600). Returns PEM bytes.

    Race-safe for processes starting together: the key is written completely to a private temporary file and
    published with link(2), which fails if `path` exists. So `path` never exists half-written, exactly one key wins,
    and a loser reads the winner's key. (O_CREAT|O_EXCL on `path` itself would let a concurrent reader see an
    empty or partial file between create and write.)"""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = generate_key()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
            log.info("generated a new DKIM key in %s", path)
        except FileExistsError:
            pass  # another process published its key first: use that one
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("DKIM key %s is readable by others (mode %o); chmod 600 it", path, mode)
    return normalize_key(path.read_bytes(), str(path))


def signing_key(dkim_private_key: Path | None, data_dir: Path) -> bytes:
    """DKIM_PRIVATE_KEY if set, else the generated key file in DATA_DIR."""
    if dkim_private_key is not None:
        return load_key(dkim_private_key)
    return load_or_create_key(data_dir / KEY_FILE_NAME)


# ---------------------------------------------------------------------------------------------------------------
# Records


def public_key_der(pem: bytes) -> bytes:
    """DER SubjectPublicKeyInfo of the key: what DKIM's p= carries (base64)."""
    return (
        _load_rsa(pem, "DKIM key")
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def public_record(pem: bytes) -> str:
    """The DKIM TXT value: ``v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo DER>`` (one string, unsplit)."""
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(public_key_der(pem)).decode("ascii")


def txt_strings(value: str, size: int = 255) -> list[str]:
    """Split a TXT value into character-strings of at most `size` bytes (a DNS limit); resolvers and DKIM
    verifiers concatenate them with nothing in between. Splits never fall inside a character (values are ASCII)."""
    raw = value.encode("ascii")
    return [raw[i : i + size].decode("ascii") for i in range(0, len(raw), size)] or [""]


def zone_txt(name: str, value: str, ttl: int = TTL) -> str:
    """One zone-file line: ``name. TTL IN TXT "part1" "part2"`` (quotes and backslashes escaped)."""
    parts = " ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in txt_strings(value))
    return f"{name.rstrip('.')}. {ttl} IN TXT {parts}"


def zone_lines(selector: str, domain: str, pem: bytes) -> str:
    """The zone-file line for the key: ``<selector>._domainkey.<domain>. 3600 IN TXT "v=DKIM1; k=rsa; p=..." "..."``
    (a 2048-bit key's record is ~410 bytes, so it is always split into two or more strings)."""
    return zone_txt(f"{selector}._domainkey.{domain}", public_record(pem))


def spf_value(relay_host: str, all_qualifier: str = "~all") -> str:
    """SPF for a domain only the platform relay sends for: ``v=spf1 a:<relay> ~all`` (ip4:/ip6: for an IP)."""
    if all_qualifier not in ("~all", "-all"):
        raise ValueError("all_qualifier must be ~all or -all")
    host = relay_host.strip("[]")
    if re.fullmatch(r"[\d.]+", host):
        mech = f"ip4:{host}"
    elif ":" in host:
        mech = f"ip6:{host}"
    else:
        mech = f"a:{host}"
    return f"v=spf1 {mech} {all_qualifier}"


def dmarc_value(rua: str | None, policy: str = "none") -> str:
    return f"v=DMARC1; p={policy}" + (f"; rua=mailto:{rua}" if rua else "")


def record_block(
    *,
    selector: str,
    domain: str,
    pem: bytes,
    relay_host: str | None,
    rua: str | None = None,
    spf_all: str = "~all",
) -> str:
    """What `identity-bot dkim record` prints: one block to paste into a zone file (comments start with ';')."""
    name = f"{selector}._domainkey.{domain}"
    lines = [
        f"; DNS records for {domain}: platform mail is signed with DKIM selector '{selector}'.",
        f"; DKIM public key. Name: {name}  Type: TXT  Value (in a web DNS console, as one string):",
        f";   {public_record(pem)}",
        "; In a zone file the value is split into quoted strings of at most 255 characters (joined with nothing):",
        zone_lines(selector, domain, pem),
    ]
    if relay_host:
        lines += [
            "; SPF: the relay that hands our mail to recipients. If the relay is a provider (SES, SendGrid, ...)",
            ";   use its include: instead - SPF must cover the addresses mail LEAVES from, not the submission host.",
            "; ~all with DKIM + DMARC in place; -all makes some receivers reject at MAIL FROM before DMARC runs.",
            zone_txt(domain, spf_value(relay_host, spf_all)),
        ]
    else:
        lines += [
            "; SPF: RELAY_SMTP_URL is not set (local delivery), so the sending host is unknown. Publish, with the",
            ";   relay's host name or its include: in place of RELAY-HOST:",
            f'; {domain}. {TTL} IN TXT "v=spf1 a:RELAY-HOST {spf_all}"',
        ]
    lines += [
        "; DMARC: start with p=none; add rua=mailto:<a mailbox you read> to get the receivers' aggregate reports",
        ";   (not an address on this domain: the inbound server takes only identities' mail), then move to",
        ";   p=quarantine and p=reject.",
        zone_txt(f"_dmarc.{domain}", dmarc_value(rua)),
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Signing

_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


def _header_names(message: bytes) -> set[bytes]:
    """Lowercased names of the header fields (the part before the first empty line)."""
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    return {m.group(1).lower() for m in _HEADER_NAME.finditer(head)}


def sign(
    message: bytes,
    selector: str,
    domain: str,
    pem: bytes,
    headers: Sequence[str] = SIGNED_HEADERS,
) -> bytes:
    """`message` with a DKIM-Signature header prepended (rsa-sha256, relaxed/relaxed).

    Signs each of `headers` that is present (From must be), over-signing From and Subject. The new header uses the
    message's own line ending (CRLF if the message has any CRLF, else LF), so the result is never mixed. Sign the
    exact bytes you will send and send the result unchanged."""
    if not isinstance(message, bytes):
        raise TypeError("message must be bytes (the wire form), not str or EmailMessage")
    present = _header_names(message)
    wanted = [h.lower().encode("ascii") for h in headers]
    if b"from" not in wanted:
        wanted.insert(0, b"from")
    if b"from" not in present:
        raise ValueError("the message has no From header")
    include = [h for h in dict.fromkeys(wanted) if h in present]
    include += [h.lower().encode("ascii") for h in OVERSIGNED_HEADERS if h.lower().encode("ascii") in include]
    linesep = b"\r\n" if b"\r\n" in message else b"\n"
    signature: bytes = dkim.sign(
        message,
        selector.encode("ascii"),
        domain.encode("ascii"),
        pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=include,
        linesep=linesep,
    )
    return signature + message


def sign_all(messages: Sequence[bytes], selector: str, domain: str, pem: bytes) -> list[bytes]:
    """`sign` for several messages (one trip to a worker thread for all copies of a message)."""
    return [sign(m, selector, domain, pem) for m in messages]


class DkimSigner:
    """Signs platform mail for `domain` with `selector`. The key is `key_file` (DKIM_PRIVATE_KEY), or the key
    generated in `data_dir` on first use; it is read once.

    dkimpy does RSA in pure Python (~10 ms of CPU per copy here): signing runs on a worker thread of its own, so the
    event loop keeps answering Slack and SMTP meanwhile and a large message cannot occupy the shared thread pool."""

    def __init__(self, *, domain: str, selector: str, key_file: Path | None, data_dir: Path) -> None:
        self.domain = domain
        self.selector = selector
        self.key_file = key_file
        self.data_dir = data_dir
        self._pem: bytes | None = None
        self._executor: ThreadPoolExecutor | None = None

    def key(self) -> bytes:
        """The signing key (PEM), loaded or created on first use. Raises DkimKeyError."""
        if self._pem is None:
            self._pem = signing_key(self.key_file, self.data_dir)
        return self._pem

    def record_block(self, relay_host: str | None) -> str:
        return record_block(selector=self.selector, domain=self.domain, pem=self.key(), relay_host=relay_host)

    async def sign(self, messages: Sequence[bytes]) -> list[bytes]:
        """Each message with a DKIM-Signature header prepended."""
        if not messages:
            return []
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dkim")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._sign_all, list(messages))

    def _sign_all(self, messages: list[bytes]) -> list[bytes]:
        return sign_all(messages, self.selector, self.domain, self.key())

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
