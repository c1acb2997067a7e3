"""The classifier on realistic raw messages: which kind, which rule, which addresses and tokens."""

from __future__ import annotations

import pytest

from bot.mail.messages import TOKEN_PATTERN
from bot.mail.mime import strip_quoted
from bot.services.incoming.rules import RULE_NAMES, Classification, classify
from models import MessageKind

TOKEN = "IDBOT-ABCDEFGHIJKLMNOPQRSTUVWX23"

POSTFIX_DSN_5XX = b"""Return-Path: <>
Received: by mx.platform.example.com (Postfix)
\tid A1B2C3D4E5; Fri,  5 Jan 2024 10:10:10 +0000 (UTC)
Date: Fri,  5 Jan 2024 10:10:10 +0000 (UTC)
From: MAILER-DAEMON@mx.platform.example.com (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: jane.doe@platform.example.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="A1B2C3D4E5.1704449410/mx.platform.example.com"
Message-Id: <20240105101010.A1B2C3D4E5@mx.platform.example.com>

This is a MIME-encapsulated message.

--A1B2C3D4E5.1704449410/mx.platform.example.com
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.platform.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<Nobody@Customer.example.org>: host mx.customer.example.org[203.0.113.5] said:
    550 5.1.1 <nobody@customer.example.org>: Recipient address rejected: User
    unknown in virtual mailbox table (in reply to RCPT TO command)

--A1B2C3D4E5.1704449410/mx.platform.example.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.platform.example.com
X-Postfix-Queue-ID: A1B2C3D4E5
X-Postfix-Sender: rfc822; jane.doe@platform.example.com
Arrival-Date: Fri,  5 Jan 2024 10:10:09 +0000 (UTC)

Final-Recipient: rfc822; Nobody@Customer.example.org
Original-Recipient: rfc822;nobody@customer.example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.customer.example.org
Diagnostic-Code: smtp; 550 5.1.1 <nobody@customer.example.org>: Recipient
    address rejected: User unknown in virtual mailbox table

--A1B2C3D4E5.1704449410/mx.platform.example.com
Content-Description: Undelivered Message
Content-Type: message/rfc822

From: Jane Doe <jane.doe@platform.example.com>
To: nobody@customer.example.org
Subject: Quick question about your Q3 plans
Date: Fri, 5 Jan 2024 10:10:08 +0000
Message-ID: <outbound-1@platform.example.com>

Hi Sam, would you have 15 minutes next week?
If you'd rather not hear from me, reply "unsubscribe".

--A1B2C3D4E5.1704449410/mx.platform.example.com--
"""

POSTFIX_DSN_DELAYED = b"""From: MAILER-DAEMON@mx.platform.example.com (Mail Delivery System)
Subject: Delayed Mail (still being retried)
To: jane.doe@platform.example.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="DLY.1704449410"
Message-Id: <20240105141010.F00D@mx.platform.example.com>

--DLY.1704449410
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.platform.example.com.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

<slow@customer.example.org>: connect to mx.customer.example.org[203.0.113.5]:25:
    Connection timed out

--DLY.1704449410
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.platform.example.com
Arrival-Date: Fri,  5 Jan 2024 10:10:09 +0000 (UTC)

Final-Recipient: rfc822; slow@customer.example.org
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.customer.example.org[203.0.113.5]:25:
    Connection timed out
Will-Retry-Until: Wed, 10 Jan 2024 10:10:09 +0000 (UTC)

--DLY.1704449410
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Jane Doe <jane.doe@platform.example.com>
To: slow@customer.example.org
Subject: Quick question about your Q3 plans

--DLY.1704449410--
"""

ARF_COMPLAINT = b"""From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>
To: fbl@platform.example.com
Subject: FW: Quick question about your Q3 plans
Date: Thu, 8 Mar 2024 14:00:05 +0000
Message-ID: <arf-1234@arf.mail.yahoo.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="----=_arf_boundary"

------=_arf_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP 198.51.100.7 on Thu, 8 Mar 2024 14:00:00 +0000.
For more information about this format please see http://www.mipassoc.org/arf/.

------=_arf_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Mail-From: <jane.doe@platform.example.com>
Original-Rcpt-To: <Complainer@Customer.example.org>
Arrival-Date: Thu, 8 Mar 2024 14:00:00 +0000
Source-IP: 198.51.100.7
Reported-Domain: platform.example.com

------=_arf_boundary
Content-Type: message/rfc822
Content-Disposition: inline

From: Jane Doe <jane.doe@platform.example.com>
To: complainer@customer.example.org
Subject: Quick question about your Q3 plans
Message-ID: <outbound-2@platform.example.com>

Hi, would you have 15 minutes next week?

------=_arf_boundary--
"""

# The same complaint from a provider that redacts the feedback fields: the complainer is the returned message's To.
ARF_WITHOUT_RCPT_FIELD = ARF_COMPLAINT.replace(b"Original-Rcpt-To: <Complainer@Customer.example.org>\n", b"")

GMAIL_NONSTANDARD_BOUNCE = b"""Delivered-To: jane.doe@platform.example.com
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: jane.doe@platform.example.com
Subject: Delivery Status Notification (Failure)
Date: Tue, 09 Jan 2024 09:12:13 -0800 (PST)
Message-ID: <659d7f0d.abc.gmail-bounce@mx.google.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"

** Address not found **

Your message wasn't delivered to lead.gone@example.org because the address couldn't be found, or is unable to \
receive mail.

Learn more here: https://support.google.com/mail/?p=NoSuchUser

The response was:

The email account that you tried to reach does not exist. Please try double-checking the recipient's email address \
for typos or unnecessary spaces. 550 5.1.1 https://support.google.com/mail/?p=NoSuchUser

----- Original message -----

From: Jane Doe <jane.doe@platform.example.com>
To: lead.gone@example.org
Subject: Quick question about your Q3 plans
Message-ID: <outbound-3@platform.example.com>

Hi, would you have 15 minutes next week?
"""

VACATION_AUTO_SUBMITTED = b"""From: Sam Lead <sam@customer.example.org>
To: jane.doe@platform.example.com
Subject: Re: Quick question about your Q3 plans
Date: Tue, 09 Jan 2024 10:00:00 +0100
Message-ID: <vacation-1@customer.example.org>
Auto-Submitted: auto-replied (vacation)
Content-Type: text/plain; charset=utf-8

I am on holiday until 22 January with limited access to email.
"""

EXCHANGE_OOO_SUBJECT_ONLY = b"""From: Sam Lead <sam@customer.example.org>
To: Jane Doe <jane.doe@platform.example.com>
Subject: Automatic reply: Quick question about your Q3 plans
Thread-Topic: Quick question about your Q3 plans
Thread-Index: AQHaQ1b2c3d4e5f6
Date: Tue, 9 Jan 2024 09:00:01 +0000
Message-ID: <AM0PR01MB1234.eurprd01.prod.exchangelabs.com>
X-MS-Has-Attach:
X-Auto-Response-Suppress: All
X-MS-Exchange-Inbox-Rules-Loop: sam@customer.example.org
Content-Type: text/plain; charset="us-ascii"

Thank you for your message. I am out of the office until January 15th. For urgent matters contact \
support@customer.example.org.
"""

GERMAN_ABWESENHEITSNOTIZ = """From: Lena Kunde <lena@kunde.example.de>
To: jane.doe@platform.example.com
Subject: Abwesenheitsnotiz: Quick question about your Q3 plans
Date: Tue, 9 Jan 2024 09:00:01 +0100
Message-ID: <abw-1@kunde.example.de>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Vielen Dank für Ihre Nachricht. Ich bin bis zum 15. Januar nicht im Büro.
""".encode()

OUTLOOK_REPLY_WITH_SUPPRESS_HEADER = b"""From: Sam Lead <sam@customer.example.org>
To: Jane Doe <jane.doe@platform.example.com>
Subject: RE: Quick question about your Q3 plans
Date: Tue, 9 Jan 2024 11:30:00 +0000
Message-ID: <AM0PR01MB5678.eurprd01.prod.exchangelabs.com>
In-Reply-To: <outbound-1@platform.example.com>
X-Auto-Response-Suppress: All
Content-Type: text/plain; charset="us-ascii"

Hi Jane, sounds interesting. Could we talk on Tuesday at 3pm?

Sam
"""

QUOTED_UNSUBSCRIBE_REAL_QUESTION = b"""From: Sam Lead <sam@customer.example.org>
To: Jane Doe <jane.doe@platform.example.com>
Subject: Re: Quick question about your Q3 plans
Date: Tue, 9 Jan 2024 11:30:00 +0000
Message-ID: <CAF=abc123@mail.gmail.com>
Content-Type: text/plain; charset="UTF-8"

Thanks Jane - does your tool integrate with Salesforce? And what does pricing look like for 20 seats?

On Tue, Jan 9, 2024 at 10:00 AM Jane Doe <jane.doe@platform.example.com>
wrote:

> Hi Sam, would you have 15 minutes next week?
>
> If you'd rather not hear from me, reply "unsubscribe".
"""

OUTLOOK_QUOTED_UNSUBSCRIBE = b"""From: Sam Lead <sam@customer.example.org>
To: Jane Doe <jane.doe@platform.example.com>
Subject: RE: Quick question about your Q3 plans
Message-ID: <AM0PR01MB9999.eurprd01.prod.exchangelabs.com>
Content-Type: text/plain; charset="us-ascii"

Can you send me a case study first?

From: Jane Doe <jane.doe@platform.example.com>
Sent: Tuesday, January 9, 2024 10:00 AM
To: Sam Lead <sam@customer.example.org>
Subject: Quick question about your Q3 plans

Hi Sam, would you have 15 minutes next week? To opt out, just reply "remove me".
"""

HTML_QUOTED_UNSUBSCRIBE = b"""From: Sam Lead <sam@customer.example.org>
To: Jane Doe <jane.doe@platform.example.com>
Subject: Re: Quick question about your Q3 plans
Message-ID: <html-reply-1@customer.example.org>
MIME-Version: 1.0
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">Yes please, send the deck over.</div><br><div class="gmail_quote"><div dir="ltr" \
class="gmail_attr">On Tue, Jan 9, 2024 at 10:00 AM Jane Doe wrote:<br></div><blockquote class="gmail_quote">\
Hi Sam, would you have 15 minutes next week?<br>Reply &quot;unsubscribe&quot; to stop.</blockquote></div>
"""

PLEASE_REMOVE_ME = b"""From: "Sam Lead" <Sam@Customer.example.org>
To: Jane Doe <jane.doe@platform.example.com>
Subject: Re: Quick question about your Q3 plans
Message-ID: <remove-1@customer.example.org>
Content-Type: text/plain; charset="UTF-8"

Please remove me from your list.

On Tue, Jan 9, 2024 at 10:00 AM Jane Doe <jane.doe@platform.example.com> wrote:
> Hi Sam, would you have 15 minutes next week?
"""

GERMAN_UNSUBSCRIBE = """From: Lena Kunde <lena@kunde.example.de>
To: jane.doe@platform.example.com
Subject: AW: Quick question about your Q3 plans
Message-ID: <abmelden-1@kunde.example.de>
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Bitte nehmen Sie mich aus Ihrem Verteiler. Ich möchte mich abmelden.

-----Ursprüngliche Nachricht-----
Von: Jane Doe <jane.doe@platform.example.com>
""".encode()

GMAIL_FORWARDED_TOKEN_IN_BODY = f"""From: Jane Doe <jane@acme.example.com>
To: cc-0123456789abcdef0123@track.example.com
Subject: Fwd: Re: Tracking verification
Date: Tue, 9 Jan 2024 12:00:00 +0000
Message-ID: <CAF=fwd-1@mail.gmail.com>
Content-Type: text/plain; charset="UTF-8"

---------- Forwarded message ---------
From: Identity Bot <bot@platform.example.com>
Date: Tue, Jan 9, 2024 at 11:59 AM
Subject: Re: Tracking verification
To: Jane Doe <jane@acme.example.com>

This response email verifies CC tracking for this identity: your mailbox should forward a copy of it to the CC \
tracking address.

Tracking token: {TOKEN}
""".encode()

# Outlook "forward as attachment": the token is only in the attached copy's header (and its quoted-printable body).
FORWARDED_AS_ATTACHMENT = f"""From: Jane Doe <jane@acme.example.com>
To: cc-0123456789abcdef0123@track.example.com
Subject: FW: Tracking verification
Message-ID: <fwd-att-1@acme.example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: text/plain; charset="us-ascii"

See attached.

--outer
Content-Type: message/rfc822

From: Identity Bot <bot@platform.example.com>
To: Jane Doe <jane@acme.example.com>
Subject: Tracking verification
X-Identity-Bot-Token: {TOKEN}
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

Tracking token: {TOKEN[:15]}=
{TOKEN[15:]}

--outer--
""".encode()

# Our verification mail as generated (Auto-Submitted: auto-generated) arriving directly: still a verification.
OWN_VERIFICATION_DIRECT = f"""From: Identity Bot <bot@platform.example.com>
To: Jane Doe <jane.doe@platform.example.com>
Subject: Re: Tracking verification {TOKEN}
Auto-Submitted: auto-generated
X-Identity-Bot-Token: {TOKEN}
Content-Type: text/plain; charset="utf-8"

Tracking token: {TOKEN}
""".encode()

# A bounce of one of our verification mails carries the token in the returned copy: it is a bounce, not a proof.
BOUNCED_VERIFICATION = POSTFIX_DSN_5XX.replace(
    b"Message-ID: <outbound-1@platform.example.com>\n",
    f"Message-ID: <outbound-1@platform.example.com>\nX-Identity-Bot-Token: {TOKEN}\n".encode(),
)

OWN_FORWARDED_LEAD = b"""From: Jane Doe <jane.doe@platform.example.com>
To: jane@acme.example.com
Reply-To: Sam Lead <sam@customer.example.org>
Subject: Fwd: Re: Quick question about your Q3 plans
Message-ID: <170480000000.1.1@platform.example.com>
X-Identity-Bot-Forwarded: 17
X-Forwarded-To: cc-0123456789abcdef0123@track.example.com
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="fwd"

--fwd
Content-Type: text/plain; charset="utf-8"

Sam Lead <sam@customer.example.org> replied to jane.doe@platform.example.com:

Sounds good. Please remove me from the cc list and add my colleague Ann instead.

--fwd
Content-Type: message/rfc822
Content-Disposition: attachment; filename="original.eml"

From: Sam Lead <sam@customer.example.org>
To: jane.doe@platform.example.com
Subject: Re: Quick question about your Q3 plans

Sounds good.

--fwd--
"""

NEWSLETTER_BULK = b"""From: News <news@vendor.example.net>
To: jane.doe@platform.example.com
Subject: Our January product update
Precedence: bulk
List-Unsubscribe: <mailto:unsubscribe@vendor.example.net>
Content-Type: text/plain

New features this month. Click here to unsubscribe.
"""

AUTO_SUBMITTED_NO = b"""From: Sam Lead <sam@customer.example.org>
To: jane.doe@platform.example.com
Subject: Re: Quick question about your Q3 plans
Auto-Submitted: no
Content-Type: text/plain

Happy to chat. Thursday works.
"""


CASES: list[tuple[str, bytes, Classification]] = [
    (
        "postfix dsn 5.1.1",
        POSTFIX_DSN_5XX,
        Classification(MessageKind.BOUNCE, "dsn-report", addresses=("nobody@customer.example.org",)),
    ),
    ("transient 4.x.x dsn", POSTFIX_DSN_DELAYED, Classification(MessageKind.BOUNCE, "dsn-report")),
    (
        "arf complaint",
        ARF_COMPLAINT,
        Classification(MessageKind.COMPLAINT, "arf-report", addresses=("complainer@customer.example.org",)),
    ),
    (
        "arf complaint, redacted fields",
        ARF_WITHOUT_RCPT_FIELD,
        Classification(MessageKind.COMPLAINT, "arf-report", addresses=("complainer@customer.example.org",)),
    ),
    (
        "gmail non-standard bounce",
        GMAIL_NONSTANDARD_BOUNCE,
        Classification(MessageKind.BOUNCE, "non-standard-bounce", addresses=("lead.gone@example.org",)),
    ),
    (
        "auto-submitted auto-replied",
        VACATION_AUTO_SUBMITTED,
        Classification(MessageKind.AUTO_REPLY, "auto-submitted-header"),
    ),
    (
        "exchange ooo by subject only",
        EXCHANGE_OOO_SUBJECT_ONLY,
        Classification(MessageKind.AUTO_REPLY, "out-of-office-subject"),
    ),
    (
        "german abwesenheitsnotiz",
        GERMAN_ABWESENHEITSNOTIZ,
        Classification(MessageKind.AUTO_REPLY, "out-of-office-subject"),
    ),
    (
        "x-auto-response-suppress is not a mark",
        OUTLOOK_REPLY_WITH_SUPPRESS_HEADER,
        Classification(MessageKind.LEAD, "default"),
    ),
    (
        "quoted unsubscribe, real question",
        QUOTED_UNSUBSCRIBE_REAL_QUESTION,
        Classification(MessageKind.LEAD, "default"),
    ),
    ("outlook-quoted opt-out phrase", OUTLOOK_QUOTED_UNSUBSCRIBE, Classification(MessageKind.LEAD, "default")),
    ("html reply quoting unsubscribe", HTML_QUOTED_UNSUBSCRIBE, Classification(MessageKind.LEAD, "default")),
    (
        "please remove me",
        PLEASE_REMOVE_ME,
        Classification(MessageKind.UNSUBSCRIBE, "unsubscribe-request", addresses=("sam@customer.example.org",)),
    ),
    (
        "german abmelden",
        GERMAN_UNSUBSCRIBE,
        Classification(MessageKind.UNSUBSCRIBE, "unsubscribe-request", addresses=("lena@kunde.example.de",)),
    ),
    (
        "forwarded copy, token only in body",
        GMAIL_FORWARDED_TOKEN_IN_BODY,
        Classification(MessageKind.VERIFICATION, "own-token", tokens=(TOKEN,)),
    ),
    (
        "forwarded as attachment",
        FORWARDED_AS_ATTACHMENT,
        Classification(MessageKind.VERIFICATION, "own-token", tokens=(TOKEN,)),
    ),
    (
        "own verification mail",
        OWN_VERIFICATION_DIRECT,
        Classification(MessageKind.VERIFICATION, "own-token", tokens=(TOKEN,)),
    ),
    (
        "bounce of a verification mail",
        BOUNCED_VERIFICATION,
        Classification(MessageKind.BOUNCE, "dsn-report", addresses=("nobody@customer.example.org",)),
    ),
    ("our own forwarded lead", OWN_FORWARDED_LEAD, Classification(MessageKind.LOOP, "own-forward")),
    ("bulk newsletter", NEWSLETTER_BULK, Classification(MessageKind.AUTO_REPLY, "precedence-header")),
    ("auto-submitted: no", AUTO_SUBMITTED_NO, Classification(MessageKind.LEAD, "default")),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classify(raw: bytes, expected: Classification) -> None:
    assert verdict(classify(raw)) == verdict(expected)
    # With CRLF line endings, as stored by the SMTP server, the verdict is the same.
    assert verdict(classify(raw.replace(b"\n", b"\r\n"))) == verdict(expected)


def verdict(c: Classification) -> tuple[object, ...]:
    """What a rule decided and extracted (permanence and the original's Message-IDs are checked elsewhere)."""
    return c.kind, c.rule, c.addresses, c.tokens


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: Quick question",
        "Out of Office: Quick question",
        "Sam Lead is out of the office",
        "Abwesenheitsnotiz: Quick question",
        "Réponse automatique : Quick question",
        "Respuesta automática: Quick question",
        "Risposta automatica: Quick question",
        "Afwezig: Quick question",
    ],
)
def test_out_of_office_subjects_in_several_languages(subject: str) -> None:
    raw = f"From: sam@customer.example.org\nTo: jane.doe@platform.example.com\nSubject: {subject}\n\nAway.\n"
    assert classify(raw.encode()) == Classification(MessageKind.AUTO_REPLY, "out-of-office-subject")


@pytest.mark.parametrize(
    "header",
    ["X-Autoreply: yes", "X-Autorespond: on vacation", "X-Auto-Response: yes", "X-Autogenerated: Reply"],
)
def test_vendor_auto_reply_headers(header: str) -> None:
    raw = f"From: sam@customer.example.org\nSubject: Re: Quick question\n{header}\n\nAway.\n"
    assert classify(raw.encode()) == Classification(MessageKind.AUTO_REPLY, "autoreply-header")


@pytest.mark.parametrize(
    "text",
    [
        "Unsubscribe",
        "Take me off your list, thanks.",
        "Please stop emailing me.",
        "I'd like to opt out.",
        "Not interested, please remove my address.",
        "Merci de me désabonner.",
        "Por favor, quiero darme de baja.",
    ],
)
def test_unsubscribe_phrases(text: str) -> None:
    raw = f"From: Sam <sam@customer.example.org>\nSubject: Re: Quick question\n\n{text}\n".encode()
    assert classify(raw) == Classification(
        MessageKind.UNSUBSCRIBE, "unsubscribe-request", addresses=("sam@customer.example.org",)
    )


def test_garbage_is_a_lead_not_an_exception() -> None:
    assert classify(b"\x00\xff not a message at all").kind == MessageKind.LEAD
    assert classify(b"").kind == MessageKind.LEAD


def test_interleaved_reply_keeps_own_lines_only() -> None:
    text = "> Would you like a demo?\nYes, next week.\n> Unsubscribe here\nThanks"
    assert strip_quoted(text) == "Yes, next week.\nThanks"


def test_token_pattern_and_rule_names() -> None:
    assert TOKEN_PATTERN.fullmatch(TOKEN)
    assert len(set(RULE_NAMES)) == len(RULE_NAMES)
