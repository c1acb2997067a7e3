"""`identity-bot` command line: run, db upgrade, demo, secrets, credentials, dkim. Everything it builds comes from the
composition root (bot/app/)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from dotenv import find_dotenv, load_dotenv

from bot.config import ConfigError, Settings, load_settings
from bot.logs import setup_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="identity-bot", description="Slack bot that runs email identities.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="serve Slack (HTTP or Socket Mode) and the SMTP servers")
    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="apply pending migrations")
    sub.add_parser("demo", help="the whole flow against a local Slack emulator, printing what Slack shows")
    sec = sub.add_parser("secrets", help="encryption keys for stored SMTP passwords")
    sec.add_argument(
        "action",
        choices=["rotate", "generate-key"],
        help="rotate: re-encrypt every stored password under the first key; generate-key: print a new key",
    )
    cred = sub.add_parser("credentials", help="submission gateway credentials")
    cred.add_argument(
        "action",
        choices=["issue", "revoke"],
        help="issue: a new username and password for an identity (shown once); revoke: disable a username",
    )
    cred.add_argument("target", help="the identity's email address (issue) or the username (revoke)")
    dkim = sub.add_parser("dkim", help="DKIM signing of platform-domain mail")
    dkim.add_argument(
        "action",
        choices=["record"],
        help="record: print the DNS records to publish (DKIM key, SPF, DMARC); creates the key if there is none",
    )
    return p


def _credentials(settings: Settings, action: str, target: str) -> int:
    """`credentials issue <address>` prints "username: …" and "password: …" (the only time the password is shown);
    `credentials revoke <username>` stops it working at once."""
    from bot.maintenance import issue_credentials, revoke_credentials
    from bot.services.errors import NotFound

    try:
        if action == "issue":
            issued = asyncio.run(issue_credentials(settings, target))
            print(f"username: {issued.username}")
            print(f"password: {issued.password}")
        elif asyncio.run(revoke_credentials(settings, target)):
            print(f"revoked: {target}")
        else:
            print(f"{target} was already revoked")
    except NotFound as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_dotenv(find_dotenv(usecwd=True), override=False)  # the .env of the directory it runs in
    try:
        if args.command == "run":
            settings = load_settings()
            setup_logging(settings.log_level)
            from bot.app import serve

            asyncio.run(serve(settings))
        elif args.command == "db":
            settings = load_settings(require_slack=False)
            setup_logging(settings.log_level)
            from bot.maintenance import upgrade_database

            asyncio.run(upgrade_database(settings))
            print("database is up to date")
        elif args.command == "secrets":
            if args.action == "generate-key":
                from cryptography.fernet import Fernet

                print(Fernet.generate_key().decode())
                return 0
            settings = load_settings(require_slack=False)
            setup_logging(settings.log_level)
            from bot.maintenance import rotate_secrets

            count = asyncio.run(rotate_secrets(settings))
            print(f"re-encrypted {count} stored password(s) under the first key")
        elif args.command == "credentials":
            settings = load_settings(require_slack=False)
            setup_logging(settings.log_level)
            return _credentials(settings, args.action, args.target)
        elif args.command == "dkim":
            settings = load_settings(require_slack=False)
            setup_logging(settings.log_level)
            from bot.maintenance import dkim_record

            sys.stdout.write(dkim_record(settings))
        elif args.command == "demo":
            from bot.sandbox.demo import run_demo

            return run_demo()
    except ConfigError as exc:
        print(f"identity-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
