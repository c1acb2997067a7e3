"""Start-up configuration: a missing or malformed setting stops start-up with one line naming it, status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import DEFAULT_PLATFORM_DOMAIN, ConfigError, load_settings

BASE = {"SLACK_BOT_TOKEN": "xoxb-1-2", "SLACK_SIGNING_SECRET": "s"}


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_without_a_bot_token_exits_2_naming_it(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "run")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SLACK_BOT_TOKEN" in lines[0], result.stderr


def test_a_malformed_setting_is_named(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "run", SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s", INBOUND_SMTP="nonsense")
    assert result.returncode == 2
    assert "INBOUND_SMTP" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SLACK_BOT_TOKEN": "xoxp-user-token"}, "SLACK_BOT_TOKEN"),
        ({"SLACK_SIGNING_SECRET": ""}, "SLACK_SIGNING_SECRET"),
        ({"PORT": "http"}, "PORT"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"PLATFORM_DOMAIN": "not a domain"}, "PLATFORM_DOMAIN"),
        ({"RELAY_SMTP_URL": "http://relay"}, "RELAY_SMTP_URL"),
        ({"MANAGERS": "alice"}, "MANAGERS"),
        ({"SMTP_ALLOW_PRIVATE_HOSTS": "maybe"}, "SMTP_ALLOW_PRIVATE_HOSTS"),
        ({"TRACKING_TIMEOUT": "-1"}, "TRACKING_TIMEOUT"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"APPROVALS_CHANNEL": "#approvals"}, "APPROVALS_CHANNEL"),
        ({"OPS_CHANNEL": "#ops"}, "OPS_CHANNEL"),
        ({"INBOUND_TLS_CERT": "/no/such/cert.pem", "INBOUND_TLS_KEY": "/no/such/key.pem"}, "INBOUND_TLS_CERT"),
        ({"INBOUND_TLS_CERT": "/no/such/cert.pem"}, "INBOUND_TLS_KEY"),
        ({"SLACK_APP_TOKEN": "xoxb-wrong-kind"}, "SLACK_APP_TOKEN"),
        ({"DKIM_SELECTOR": "bad selector"}, "DKIM_SELECTOR"),
        ({"DKIM_SELECTOR": "-x"}, "DKIM_SELECTOR"),
        ({"DKIM_PRIVATE_KEY": "/nonexistent/dkim.pem"}, "DKIM_PRIVATE_KEY"),
        ({"PUBLIC_URL": "bot.example.com"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "ftp://bot.example.com"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://bot.example.com/?x=1"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://user:pw@bot.example.com"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://bot.example.com:http"}, "PUBLIC_URL"),
        ({"HEALTH_INTERVAL": "0"}, "HEALTH_INTERVAL"),
        ({"HEALTH_INTERVAL": "daily"}, "HEALTH_INTERVAL"),
        ({"DNS_RESOLVER": "dns.example.com:53"}, "DNS_RESOLVER"),
        ({"DNS_RESOLVER": "127.0.0.1:0"}, "DNS_RESOLVER"),
        ({"HEALTH_MENTION": "@sales-leads"}, "HEALTH_MENTION"),
        ({"SUBMISSION_PUBLIC_HOST": "smtp.example.com:x"}, "SUBMISSION_PUBLIC_HOST"),
        ({"SUBMISSION_PUBLIC_HOST": "not a host"}, "SUBMISSION_PUBLIC_HOST"),
    ],
)
def test_each_bad_setting_names_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, **env})
    assert info.value.variable == variable


def test_defaults_follow_the_contract() -> None:
    s = load_settings(BASE)
    assert (s.host, s.port) == ("127.0.0.1", 3000)
    assert s.slack_api_url == "https://slack.com/api/"
    assert s.platform_domain == DEFAULT_PLATFORM_DOMAIN and s.tracking_domain == DEFAULT_PLATFORM_DOMAIN
    assert (str(s.inbound_smtp), str(s.submission_smtp)) == ("127.0.0.1:2525", "127.0.0.1:2587")
    assert s.relay is None and s.approvals_channel is None and s.managers == ()
    assert s.smtp_allow_private_hosts is False and s.tracking_timeout == 600
    assert s.database_url.startswith("sqlite") and s.data_dir == Path(".identity-bot")
    assert (s.dkim_selector, s.dkim_private_key, s.public_url) == ("identitybot", None, None)
    assert (s.health_interval, s.dns_resolver, s.health_mention) == (86400, None, None)
    assert not s.socket_mode


def test_health_settings() -> None:
    s = load_settings({**BASE, "HEALTH_INTERVAL": "0.5", "DNS_RESOLVER": "[::1]:5353", "HEALTH_MENTION": "S0SALES"})
    assert (s.health_interval, s.dns_resolver, s.health_mention) == (0.5, ("::1", 5353), "S0SALES")
    s = load_settings({**BASE, "DNS_RESOLVER": "10.0.0.2", "HEALTH_MENTION": "here"})
    assert (s.dns_resolver, s.health_mention) == (("10.0.0.2", 53), "here")


def test_signing_and_public_url_settings(tmp_path: Path) -> None:
    key = tmp_path / "dkim.pem"
    key.write_text("not checked here: the key is read at start")
    s = load_settings(
        {**BASE, "DKIM_SELECTOR": "S2026", "DKIM_PRIVATE_KEY": str(key), "PUBLIC_URL": "https://bot.example.com/id/"}
    )
    assert (s.dkim_selector, s.dkim_private_key, s.public_url) == ("s2026", key, "https://bot.example.com/id")


def test_a_dkim_key_that_is_not_a_key_stops_start_up_naming_it(tmp_path: Path) -> None:
    key = tmp_path / "dkim.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    result = run_cli(
        tmp_path,
        "run",
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_SIGNING_SECRET="s",
        SLACK_API_URL="http://127.0.0.1:9/api/",  # unreachable: the token check only warns
        DATA_DIR=str(tmp_path / "data"),
        DKIM_PRIVATE_KEY=str(key),
        INBOUND_SMTP="127.0.0.1:0",
        SUBMISSION_SMTP="127.0.0.1:0",
        PORT="0",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("identity-bot: configuration error: DKIM_PRIVATE_KEY")


def test_socket_mode_needs_no_signing_secret() -> None:
    s = load_settings({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"})
    assert s.socket_mode


def test_relay_url_is_parsed_without_losing_the_password() -> None:
    s = load_settings({**BASE, "RELAY_SMTP_URL": "smtp://user%40x:p%3Ass@relay.example.com:2525?security=none"})
    assert s.relay is not None
    assert (s.relay.host, s.relay.port, s.relay.security) == ("relay.example.com", 2525, "none")
    assert (s.relay.username, s.relay.password) == ("user@x", "p:ss")
    assert "p:ss" not in repr(s)


def test_the_gateway_off_loopback_needs_a_certificate() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "SUBMISSION_SMTP": "0.0.0.0:587"})
    assert info.value.variable == "SUBMISSION_TLS_CERT"
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "SUBMISSION_TLS_CERT": "/nonexistent.pem"})
    assert info.value.variable == "SUBMISSION_TLS_KEY"


def test_sign_in_settings_default_to_the_real_endpoints_and_need_a_public_url_and_a_secret(tmp_path: Path) -> None:
    assert load_settings(BASE).oauth_apps == ()
    settings = load_settings(
        {
            **BASE,
            "PUBLIC_URL": "https://bot.acme.example/",
            "MICROSOFT_CLIENT_ID": "id",
            "MICROSOFT_CLIENT_SECRET": "sekrit-value",
        }
    )
    assert settings.public_url == "https://bot.acme.example"
    [app] = settings.oauth_apps
    assert (app.provider, app.authorize_url, app.token_url) == (
        "microsoft",
        "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize",
        "https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
    )
    assert (app.smtp.host, app.smtp.port) == ("smtp.office365.com", 587)
    assert "x" not in repr(app), "the client secret stays out of repr"
    google = load_settings(
        {**BASE, "PUBLIC_URL": "https://b.example", "GOOGLE_CLIENT_ID": "g", "GOOGLE_CLIENT_SECRET": "s"}
    )
    assert [(a.provider, a.authorize_url, a.token_url) for a in google.oauth_apps] == [
        ("google", "https://accounts.google.com/o/oauth2/v2/auth", "https://oauth2.googleapis.com/token")
    ]
    for env, variable in (
        ({"MICROSOFT_CLIENT_ID": "id", "MICROSOFT_CLIENT_SECRET": "x"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://b.example", "GOOGLE_CLIENT_ID": "g"}, "GOOGLE_CLIENT_SECRET"),
        ({"PUBLIC_URL": "ftp://b.example"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://b.example", "MICROSOFT_TOKEN_URL": "not a url"}, "MICROSOFT_TOKEN_URL"),
        ({"GOOGLE_SMTP": "smtp.gmail.com"}, "GOOGLE_SMTP"),
    ):
        with pytest.raises(ConfigError) as raised:
            load_settings({**BASE, **env})
        assert raised.value.variable == variable
    result = run_cli(tmp_path, "run", **BASE, GOOGLE_CLIENT_ID="g", GOOGLE_CLIENT_SECRET="s")
    assert result.returncode == 2 and "PUBLIC_URL" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_gateway_endpoint_mailers_are_shown() -> None:
    from bot.app import gateway_endpoint

    default = gateway_endpoint(load_settings(BASE))
    assert (default.host, default.port, default.tls) == ("127.0.0.1", 2587, "none")
    assert gateway_endpoint(load_settings(BASE), bound_port=40000).port == 40000
    public = load_settings({**BASE, "SUBMISSION_PUBLIC_HOST": "SMTP.Example.com:587"})
    assert (public.submission_public_host, public.submission_public_port) == ("smtp.example.com", 587)
    named = gateway_endpoint(load_settings({**BASE, "SUBMISSION_PUBLIC_HOST": "smtp.example.com"}), bound_port=2587)
    assert (named.host, named.port) == ("smtp.example.com", 2587)
