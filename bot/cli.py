"""`identity-bot` command line: run, db upgrade, demo (and, as they land, secrets and credentials)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from dotenv import load_dotenv

from bot.config import ConfigError, load_settings
from bot.logs import setup_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="identity-bot", description="Slack bot that runs email identities.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="serve Slack (HTTP or Socket Mode) and the SMTP servers")
    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="apply pending migrations")
    sub.add_parser("demo", help="the whole flow against a local Slack emulator, printing what Slack shows")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_dotenv(override=False)
    try:
        if args.command == "run":
            settings = load_settings()
            setup_logging(settings.log_level)
            from bot.app import serve

            asyncio.run(serve(settings))
        elif args.command == "db":
            settings = load_settings(require_slack=False)
            setup_logging(settings.log_level)
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            from models.db import run_upgrade_blocking

            run_upgrade_blocking(settings.database_url)
            print("database is up to date")
        elif args.command == "demo":
            from bot.demo import run_demo

            return run_demo()
    except ConfigError as exc:
        print(f"identity-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
