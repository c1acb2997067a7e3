"""The client kit under the services: the SMTP client, failure diagnosis, the SSRF guard, delivery routes, the
messages we write and reading untrusted MIME."""
