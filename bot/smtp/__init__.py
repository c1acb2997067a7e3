"""The SMTP edges, beside the Slack edge: the inbound MX and the submission gateway. Each is an aiosmtpd handler
class holding every reply code it chooses, calling services; no SQL here."""
