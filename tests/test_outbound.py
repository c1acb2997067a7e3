"""The outbound SMTP client against real servers: what a person sees after "Test email setup" or a send."""

from __future__ import annotations

import logging
from email.message import EmailMessage

import pytest

from bot.mail.diagnosis import SUCCESS_PROMPT, Diagnosis
from bot.mail.netguard import HostRefused, is_public_address, resolve_mail_addresses
from bot.mail.outbound import MailSender, SetupCheck, SmtpFailure, SmtpServer
from models import SmtpSecurity
from tests.mailservers import (  # noqa: F401 - the *_fixture imports register fixtures mail_ca, smtp_servers, ...
    Mailbox,
    ServerPool,
    TestCA,
    free_port,
    mail_ca_fixture,
    smtp_servers_fixture,
    trust_mail_ca_fixture,
    untrusted_ca_fixture,
)

SENDER = "jane@acme.example.com"
PASSWORD = "abcd efgh ijkl mnop"  # the shape of a Google app password
WRONG = "my-normal-Passw0rd!"
LOCAL = MailSender(allow_private_hosts=True, timeout=5)
QUICK = MailSender(allow_private_hosts=True, timeout=2)


def make_test_message(to: str = "lead@example.org", subject: str = "Identity Bot test email") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Jane Doe <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("If you can read this, sending works.")
    return msg


def assert_failed(check: SetupCheck, code: str) -> Diagnosis:
    assert not check.ok, check
    assert check.diagnosis is not None
    assert check.diagnosis.code == code, check.diagnosis
    assert check.message == check.diagnosis.text
    assert "Traceback" not in check.message
    return check.diagnosis


# --- success -------------------------------------------------------------------------------------------------


async def test_starttls_with_app_password_sends_the_test_email(smtp_servers: ServerPool, trust_mail_ca: TestCA) -> None:
    box = Mailbox()
    server = await smtp_servers.smtp(
        mailbox=box, security="starttls", tls_context=trust_mail_ca.server_context(), auth={SENDER: PASSWORD}
    )
    settings = SmtpServer("127.0.0.1", server.port, SmtpSecurity.STARTTLS, SENDER, PASSWORD)

    check = await LOCAL.check_setup(settings, sender=SENDER, test_message=make_test_message())

    assert check == SetupCheck(ok=True, message=SUCCESS_PROMPT, diagnosis=None)
    delivery = await box.wait_for_delivery(lambda m: m["Subject"] == "Identity Bot test email")
    assert delivery.message["From"].addresses[0].addr_spec == SENDER
    assert delivery.mail_from == SENDER
    assert delivery.rcpt_tos == ("lead@example.org",)
    assert delivery.login == SENDER


async def test_implicit_tls_setup_check_without_message(smtp_servers: ServerPool, trust_mail_ca: TestCA) -> None:
    box = Mailbox()
    server = await smtp_servers.smtp(
        mailbox=box, security="ssl", tls_context=trust_mail_ca.server_context(), auth={SENDER: PASSWORD}
    )
    settings = SmtpServer("localhost", server.port, SmtpSecurity.SSL, SENDER, PASSWORD)

    check = await LOCAL.check_setup(settings, sender=SENDER)
    assert check.ok and check.message == SUCCESS_PROMPT

    await LOCAL.send(settings, make_test_message(subject="over SSL"))
    assert (await box.wait_for(lambda m: m["Subject"] == "over SSL"))["To"] == "lead@example.org"


# --- credentials ---------------------------------------------------------------------------------------------


async def test_wrong_password_says_use_the_app_password_and_never_shows_it(
    smtp_servers: ServerPool, trust_mail_ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await smtp_servers.smtp(
        security="starttls", tls_context=trust_mail_ca.server_context(), auth={SENDER: PASSWORD}
    )
    settings = SmtpServer("127.0.0.1", server.port, SmtpSecurity.STARTTLS, SENDER, WRONG)

    check = await LOCAL.check_setup(settings, sender=SENDER, test_message=make_test_message())

    diagnosis = assert_failed(check, "auth_failed")
    assert "16-character app password" in diagnosis.fix
    assert "535" in diagnosis.problem
    shown = [check.message, diagnosis.problem, diagnosis.fix, repr(check), str(check), repr(settings), str(settings)]
    assert not [text for text in shown if WRONG in text]
    assert WRONG not in caplog.text
    assert any("outcome=auth_failed" in r.getMessage() for r in caplog.records if r.name.startswith("bot.mail"))


async def test_gmail_534_asks_for_an_app_password(smtp_servers: ServerPool, trust_mail_ca: TestCA) -> None:
    server = await smtp_servers.smtp(
        security="starttls",
        tls_context=trust_mail_ca.server_context(),
        auth={SENDER: PASSWORD},
        auth_failure_reply="534 5.7.9 Application-specific password required. Learn more at https://support.google.com",
    )
    check = await LOCAL.check_setup(
        SmtpServer("127.0.0.1", server.port, SmtpSecurity.STARTTLS, SENDER, WRONG), sender=SENDER
    )
    diagnosis = assert_failed(check, "app_password_required")
    assert "app password" in diagnosis.fix and "2-step verification" in diagnosis.problem


async def test_plain_connection_without_auth_says_choose_starttls(
    smtp_servers: ServerPool, trust_mail_ca: TestCA
) -> None:
    # A submission server that offers AUTH only after STARTTLS, as on port 587, with "no encryption" chosen.
    server = await smtp_servers.smtp(
        security="starttls", tls_context=trust_mail_ca.server_context(), auth={SENDER: PASSWORD}
    )
    check = await LOCAL.check_setup(SmtpServer("127.0.0.1", server.port, "none", SENDER, PASSWORD), sender=SENDER)
    diagnosis = assert_failed(check, "auth_not_offered")
    assert "STARTTLS" in diagnosis.fix


async def test_plain_server_without_auth_when_credentials_given(smtp_servers: ServerPool) -> None:
    server = await smtp_servers.smtp(security="none")
    check = await LOCAL.check_setup(SmtpServer("127.0.0.1", server.port, "none", SENDER, PASSWORD), sender=SENDER)
    assert_failed(check, "auth_not_offered")


# --- TLS mismatches ------------------------------------------------------------------------------------------


async def test_starttls_against_implicit_tls_port(smtp_servers: ServerPool, trust_mail_ca: TestCA) -> None:
    server = await smtp_servers.smtp(
        security="ssl", tls_context=trust_mail_ca.server_context(), auth={SENDER: PASSWORD}
    )
    check = await QUICK.check_setup(
        SmtpServer("127.0.0.1", server.port, SmtpSecurity.STARTTLS, SENDER, PASSWORD), sender=SENDER
    )
    diagnosis = assert_failed(check, "plain_on_ssl_port")
    assert "SSL/TLS" in diagnosis.fix


async def test_ssl_against_starttls_port(smtp_servers: ServerPool, trust_mail_ca: TestCA) -> None:
    server = await smtp_servers.smtp(security="starttls", tls_context=trust_mail_ca.server_context())
    check = await LOCAL.check_setup(
        SmtpServer("127.0.0.1", server.port, SmtpSecurity.SSL, SENDER, PASSWORD), sender=SENDER
    )
    diagnosis = assert_failed(check, "ssl_on_starttls_port")
    assert "STARTTLS" in diagnosis.fix


@pytest.mark.parametrize("security", ["ssl", "starttls"])
async def test_certificate_from_untrusted_ca(
    smtp_servers: ServerPool, trust_mail_ca: TestCA, untrusted_ca: TestCA, security: str
) -> None:
    server = await smtp_servers.smtp(security=security, tls_context=untrusted_ca.server_context())
    check = await LOCAL.check_setup(SmtpServer("localhost", server.port, security, SENDER, PASSWORD), sender=SENDER)
    diagnosis = assert_failed(check, "certificate")
    assert "self-signed" in diagnosis.problem
    assert "host name" in diagnosis.fix


async def test_certificate_for_another_name(smtp_servers: ServerPool, trust_mail_ca: TestCA) -> None:
    server = await smtp_servers.smtp(security="ssl", tls_context=trust_mail_ca.server_context(["localhost"]))
    check = await LOCAL.check_setup(
        SmtpServer("127.0.0.1", server.port, SmtpSecurity.SSL, SENDER, PASSWORD), sender=SENDER
    )
    diagnosis = assert_failed(check, "certificate")
    assert "not valid for the name 127.0.0.1" in diagnosis.problem
    assert "instead of an IP address" in diagnosis.fix


async def test_server_that_requires_starttls_says_choose_starttls(
    smtp_servers: ServerPool, trust_mail_ca: TestCA
) -> None:
    server = await smtp_servers.smtp(
        security="starttls", tls_context=trust_mail_ca.server_context(), require_starttls=True
    )
    check = await LOCAL.check_setup(SmtpServer("127.0.0.1", server.port, "none"), sender=SENDER)
    diagnosis = assert_failed(check, "starttls_required_on_port")
    assert "STARTTLS" in diagnosis.fix


async def test_starttls_not_offered_is_not_skipped(smtp_servers: ServerPool) -> None:
    box = Mailbox()
    server = await smtp_servers.smtp(mailbox=box, security="none")
    check = await LOCAL.check_setup(
        SmtpServer("127.0.0.1", server.port, SmtpSecurity.STARTTLS), sender=SENDER, test_message=make_test_message()
    )
    assert_failed(check, "tls_unavailable")
    assert box.deliveries == []


# --- reaching the server -------------------------------------------------------------------------------------


async def test_closed_port_is_refused() -> None:
    check = await LOCAL.check_setup(SmtpServer("127.0.0.1", free_port(), "starttls", SENDER, PASSWORD), sender=SENDER)
    diagnosis = assert_failed(check, "refused")
    assert "host and port" in diagnosis.fix


async def test_silent_server_times_out(smtp_servers: ServerPool) -> None:
    server = await smtp_servers.silent()
    check = await QUICK.check_setup(
        SmtpServer("127.0.0.1", server.port, SmtpSecurity.STARTTLS, SENDER, PASSWORD), sender=SENDER
    )
    assert_failed(check, "timeout")


# --- envelope ------------------------------------------------------------------------------------------------


async def test_sender_refused_names_the_address(smtp_servers: ServerPool) -> None:
    server = await smtp_servers.smtp(security="none", refuse_mail_from={SENDER})
    check = await LOCAL.check_setup(SmtpServer("127.0.0.1", server.port, "none"), sender=SENDER)
    diagnosis = assert_failed(check, "sender_refused")
    assert SENDER in diagnosis.problem and SENDER in diagnosis.fix and "550" in diagnosis.problem


async def test_temporary_failure_on_mail_from(smtp_servers: ServerPool) -> None:
    server = await smtp_servers.smtp(security="none", refuse_mail_from={SENDER: "451 4.3.0 Try again later"})
    check = await LOCAL.check_setup(SmtpServer("127.0.0.1", server.port, "none"), sender=SENDER)
    diagnosis = assert_failed(check, "temporary")
    assert "try again" in diagnosis.fix.lower()


async def test_send_names_the_refused_recipient(smtp_servers: ServerPool) -> None:
    box = Mailbox()
    server = await smtp_servers.smtp(mailbox=box, security="none", refuse_rcpt={"gone@example.org"})
    msg = make_test_message(to="lead@example.org, gone@example.org", subject="two recipients")

    with pytest.raises(SmtpFailure) as failure:
        await LOCAL.send(SmtpServer("127.0.0.1", server.port, "none"), msg)

    assert failure.value.diagnosis.code == "recipient_refused"
    assert "gone@example.org" in str(failure.value) and "lead@example.org" not in str(failure.value)
    assert failure.value.refused_recipients == ("gone@example.org",)
    delivery = await box.wait_for_delivery(lambda m: m["Subject"] == "two recipients")
    assert delivery.rcpt_tos == ("lead@example.org",)


async def test_trusted_send_skips_the_guard(smtp_servers: ServerPool) -> None:
    box = Mailbox()
    server = await smtp_servers.smtp(mailbox=box, security="none")
    guarded = MailSender()
    with pytest.raises(SmtpFailure) as failure:
        await guarded.send(SmtpServer("127.0.0.1", server.port, "none"), make_test_message(subject="relay"))
    assert failure.value.diagnosis.code == "port_not_allowed"

    await guarded.send(SmtpServer("127.0.0.1", server.port, "none"), make_test_message(subject="relay"), trusted=True)
    assert (await box.wait_for(lambda m: m["Subject"] == "relay"))["From"].addresses[0].addr_spec == SENDER


# --- the SSRF guard ------------------------------------------------------------------------------------------


async def test_guard_refuses_loopback_unless_allowed() -> None:
    with pytest.raises(HostRefused) as refused:
        await resolve_mail_addresses("127.0.0.1", 587, allow_private=False, allowed_ports=(587,))
    assert refused.value.diagnosis.code == "private_host"
    assert await resolve_mail_addresses("127.0.0.1", 587, allow_private=True, allowed_ports=(587,)) == ["127.0.0.1"]


@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "localhost", "10.1.2.3", "169.254.169.254", "::1", "224.0.1.1"])
async def test_guard_refuses_internal_addresses(host: str) -> None:
    check = await MailSender().check_setup(
        SmtpServer(host, 587, SmtpSecurity.STARTTLS, SENDER, PASSWORD), sender=SENDER
    )
    diagnosis = assert_failed(check, "private_host")
    assert "public SMTP host name" in diagnosis.fix


async def test_guard_unknown_host() -> None:
    check = await MailSender().check_setup(SmtpServer("nonexistent.invalid", 587, SmtpSecurity.STARTTLS), sender=SENDER)
    diagnosis = assert_failed(check, "host_not_found")
    assert "nonexistent.invalid" in diagnosis.problem


async def test_guard_port_not_allowed() -> None:
    check = await MailSender().check_setup(SmtpServer("smtp.example.com", 8080, SmtpSecurity.STARTTLS), sender=SENDER)
    diagnosis = assert_failed(check, "port_not_allowed")
    assert "587" in diagnosis.fix


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("fd00::1", False),
        ("fe80::1%1", False),
        ("239.1.2.3", False),
    ],
)
def test_public_address_rules(address: str, public: bool) -> None:
    assert is_public_address(address) is public
