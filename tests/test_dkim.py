"""DKIM keys, records and signatures (bot/mail/dkim.py), and `identity-bot dkim record`."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import dkim
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bot.mail.dkim import (
    DkimKeyError,
    DkimSigner,
    load_key,
    load_or_create_key,
    normalize_key,
    public_record,
    sign,
    zone_lines,
)
from tests.test_cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "mail.connectplex.com"
SELECTOR = "identitybot"
MESSAGE = (
    b"From: Ann <ann@mail.connectplex.com>\r\nTo: bob@example.org\r\nSubject: Hello\r\n"
    b"Date: Mon, 01 Jan 2024 09:00:00 +0000\r\nMessage-ID: <a.1@mail.connectplex.com>\r\n\r\nHi Bob,\r\n"
)


@pytest.fixture(scope="module")
def pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return normalize_key(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def dns_for(pem: bytes):  # type: ignore[no-untyped-def]
    records = {f"{SELECTOR}._domainkey.{DOMAIN}.".encode(): public_record(pem).encode()}
    return lambda name, timeout=5: records.get(name)


def test_a_generated_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "dkim.key"
    first = load_or_create_key(path)
    assert first.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(first, None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert load_or_create_key(path) == first
    assert sorted(p.name for p in path.parent.iterdir()) == ["dkim.key"]  # no temporary files left


def test_processes_starting_together_end_up_with_one_key(tmp_path: Path) -> None:
    path = tmp_path / "dkim.key"
    start = time.time() + 1.0
    code = (
        "import sys, time, hashlib; from pathlib import Path; from bot.mail.dkim import load_or_create_key;"
        f"time.sleep(max(0, {start} - time.time()));"  # all at the same instant
        "print(hashlib.sha256(load_or_create_key(Path(sys.argv[1]))).hexdigest())"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, env=env) for _ in range(8)
    ]
    digests = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert digests == {hashlib.sha256(path.read_bytes()).hexdigest().encode()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dkim.key"]


def test_a_configured_key_is_read_never_created_and_bad_ones_say_why(tmp_path: Path, pem: bytes) -> None:
    key = serialization.load_pem_private_key(pem, None)
    # PKCS#8 with CRLF line ends (a key file edited on Windows): dkimpy itself can't read this one; we can.
    pkcs8_crlf = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).replace(b"\n", b"\r\n")
    (tmp_path / "crlf.pem").write_bytes(pkcs8_crlf)
    assert load_key(tmp_path / "crlf.pem") == pem
    signer = DkimSigner(domain=DOMAIN, selector=SELECTOR, key_file=tmp_path / "crlf.pem", data_dir=tmp_path / "d")
    assert signer.key() == pem and not (tmp_path / "d").exists()

    with pytest.raises(DkimKeyError, match="does not exist"):
        load_key(tmp_path / "missing.pem")
    assert not (tmp_path / "missing.pem").exists()
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for name, content, problem in (
        ("enc.pem", encrypted, "encrypted"),
        ("ec.pem", ec_key, "RSA"),
        ("junk.pem", b"hello", "not a PEM private key"),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DkimKeyError, match=problem):
            load_key(tmp_path / name)


def test_the_zone_line_parses_back_to_the_record(pem: bytes) -> None:
    record = public_record(pem)
    line = zone_lines(SELECTOR, DOMAIN, pem)
    zone = dns.zone.from_text("$ORIGIN .\n@ 3600 IN SOA a. b. 1 1 1 1 1\n@ 3600 IN NS a.\n" + line + "\n", origin=".")
    strings = list(zone.find_rdataset(f"{SELECTOR}._domainkey.{DOMAIN}.", "TXT"))[0].strings
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert b"".join(strings).decode() == record


async def test_the_signer_signs_each_message_as_given_and_it_verifies(pem: bytes, tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_bytes(pem)
    signer = DkimSigner(domain=DOMAIN, selector=SELECTOR, key_file=tmp_path / "k.pem", data_dir=tmp_path)
    messages = [MESSAGE, MESSAGE.replace(b"Hi Bob", b"Hi Eve")]
    try:
        signed = await signer.sign(messages)
    finally:
        signer.close()
    assert all(s.startswith(b"DKIM-Signature: ") and s.endswith(m) for s, m in zip(signed, messages, strict=True))
    assert all(dkim.verify(s, dnsfunc=dns_for(pem)) for s in signed)
    assert not dkim.verify(signed[0].replace(b"Hi Bob", b"Hi Eve"), dnsfunc=dns_for(pem))
    # Over-signed: a second From added on the way fails.
    assert not dkim.verify(signed[0].replace(b"\r\nTo:", b"\r\nFrom: ceo@x.example\r\nTo:", 1), dnsfunc=dns_for(pem))
    with pytest.raises(ValueError, match="no From"):
        sign(b"To: a@b.example\r\nSubject: x\r\n\r\nbody\r\n", SELECTOR, DOMAIN, pem)


def test_dkim_record_prints_the_same_block_each_time_and_a_bad_key_exits_2(tmp_path: Path) -> None:
    first = cli(tmp_path, "dkim", "record", PLATFORM_DOMAIN="m.example.com", DKIM_SELECTOR="s1")
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "data" / "dkim.key").read_bytes()
    assert zone_lines("s1", "m.example.com", key) in first.stdout
    assert f";   {public_record(key)}" in first.stdout  # the value as one string, for web consoles
    assert "RELAY-HOST" in first.stdout  # no relay configured: the SPF line says what to fill in
    again = cli(tmp_path, "dkim", "record", PLATFORM_DOMAIN="m.example.com", DKIM_SELECTOR="s1")
    assert again.stdout == first.stdout

    (tmp_path / "bad.pem").write_text("nonsense")
    bad = cli(tmp_path, "dkim", "record", DKIM_PRIVATE_KEY=str(tmp_path / "bad.pem"))
    missing = cli(tmp_path, "dkim", "record", DKIM_PRIVATE_KEY=str(tmp_path / "none.pem"))
    for result in (bad, missing):
        assert result.returncode == 2 and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("identity-bot: configuration error: DKIM_PRIVATE_KEY")
