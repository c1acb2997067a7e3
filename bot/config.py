"""Configuration from the environment (and an optional .env file). The names are a contract: see the README."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from bot.mail import oauth
from bot.mail.domain_checks import parse_resolver
from bot.mail.netguard import is_loopback

DEFAULT_PLATFORM_DOMAIN = "mail.connectplex.com"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LABELS = re.compile(r"^(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
DEFAULT_DKIM_SELECTOR = "identitybot"


class ConfigError(Exception):
    """A setting is missing or malformed. `variable` names it; str() is one line for the operator."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RelaySettings:
    """Where the platform hands mail it sends for platform-domain identities and its own notices."""

    host: str
    port: int
    security: str  # "starttls", "ssl" or "none"
    username: str | None = field(default=None)
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class OAuthAppSettings:
    """One provider's "Sign in with …" app: its registration and endpoints (real ones unless overridden)."""

    provider: str  # "microsoft" | "google"
    client_id: str
    client_secret: str = field(repr=False)
    authorize_url: str
    token_url: str
    jwks_url: str
    smtp: HostPort


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str | None = field(repr=False)
    slack_signing_secret: str | None = field(repr=False)
    slack_app_token: str | None = field(repr=False)
    slack_api_url: str
    host: str
    port: int
    data_dir: Path
    database_url: str
    secret_keys: tuple[str, ...] | None = field(repr=False)
    platform_domain: str
    tracking_domain: str
    inbound_smtp: HostPort
    submission_smtp: HostPort
    relay: RelaySettings | None
    approvals_channel: str | None
    managers: tuple[str, ...]
    smtp_allow_private_hosts: bool
    smtp_allowed_ports: tuple[int, ...]
    tracking_timeout: float
    smtp_timeout: float
    submission_tls: tuple[Path, Path] | None
    dkim_selector: str
    dkim_private_key: Path | None
    inbound_tls: tuple[Path, Path] | None
    ops_channel: str | None
    log_level: str
    public_url: str | None = None
    oauth_apps: tuple[OAuthAppSettings, ...] = ()
    health_interval: float = 86400.0
    dns_resolver: tuple[str, int] | None = None
    health_mention: str | None = None
    # Where mailers reach the gateway, as the "Get SMTP credentials" modal shows it (host, and port when not
    # SUBMISSION_SMTP's): SUBMISSION_PUBLIC_HOST.
    submission_public_host: str | None = None
    submission_public_port: int | None = None

    @property
    def socket_mode(self) -> bool:
        return bool(self.slack_app_token)


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(name, f"expected true or false, got {value!r}")


def _host_port(name: str, value: str) -> HostPort:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(name, f"expected HOST:PORT, got {value!r}")
    return HostPort(host.strip("[]"), int(port))


def _domain(name: str, value: str) -> str:
    v = value.strip().lower().rstrip(".")
    if not _DOMAIN.match(v):
        raise ConfigError(name, f"not a domain name: {value!r}")
    return v


def _relay(name: str, value: str) -> RelaySettings:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(name, "expected smtp://[user:pass@]host:port?security=starttls|ssl|none")
    query = parse_qs(parts.query)
    security = query.get("security", ["ssl" if parts.scheme == "smtps" else "starttls"])[0].lower()
    if security not in ("starttls", "ssl", "none"):
        raise ConfigError(name, "security must be starttls, ssl or none")
    try:
        port = parts.port or (465 if security == "ssl" else 587)
    except ValueError:
        raise ConfigError(name, "the port is not a number") from None
    return RelaySettings(
        host=parts.hostname,
        port=port,
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _slack_id_list(name: str, value: str) -> tuple[str, ...]:
    ids = tuple(x.strip() for x in value.replace(";", ",").split(",") if x.strip())
    for x in ids:
        if not re.fullmatch(r"[USW][A-Z0-9_]{2,}", x):
            raise ConfigError(name, f"{x!r} is not a Slack user ID (U…) or user-group ID (S…)")
    return ids


Env = Callable[[str], "str | None"]


def load_settings(env: Mapping[str, str] | None = None, *, require_slack: bool = True) -> Settings:
    """Read and check every setting. Raises ConfigError naming the first bad variable."""
    e = dict(os.environ if env is None else env)

    def get(name: str) -> str | None:
        v = e.get(name)
        return v if v not in (None, "") else None

    data_dir = Path(get("DATA_DIR") or "./.identity-bot").expanduser()
    database_url = get("DATABASE_URL") or f"sqlite+aiosqlite:///{(data_dir / 'identity-bot.db').resolve()}"
    if not re.match(r"^(sqlite|postgres|postgresql)(\+\w+)?://", database_url):
        raise ConfigError("DATABASE_URL", "expected a sqlite:// or postgresql:// URL")
    keys = get("SECRET_KEYS")
    secret_keys = tuple(k.strip() for k in keys.split(",") if k.strip()) if keys else None
    if keys is not None and not secret_keys:
        raise ConfigError("SECRET_KEYS", "no key given")
    level = (get("LOG_LEVEL") or "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError("LOG_LEVEL", f"expected one of {', '.join(LOG_LEVELS)}")
    platform_domain = _domain("PLATFORM_DOMAIN", get("PLATFORM_DOMAIN") or DEFAULT_PLATFORM_DOMAIN)
    return Settings(
        **_slack_settings(get, require_slack),
        data_dir=data_dir,
        database_url=database_url,
        secret_keys=secret_keys,
        platform_domain=platform_domain,
        tracking_domain=_domain("TRACKING_DOMAIN", get("TRACKING_DOMAIN") or platform_domain),
        **_mail_settings(get),
        **_signing_settings(get),
        log_level=level,
        **_sign_in_settings(get),
        **_health_settings(get),
    )


def _health_settings(get: Env) -> dict[str, Any]:
    """HEALTH_INTERVAL (seconds between scheduled re-checks), DNS_RESOLVER (host:port of the DNS server the checks
    ask; unset: the system's) and HEALTH_MENTION (a user group, or here/channel, pinged for "needs attention")."""
    resolver = get("DNS_RESOLVER")
    try:
        server = parse_resolver(resolver)
    except ValueError as exc:
        raise ConfigError("DNS_RESOLVER", f"{exc} (expected IP:PORT, [IPv6]:PORT or an IP address)") from None
    mention = get("HEALTH_MENTION")
    if mention is not None:
        mention = mention.strip().lstrip("!@")
        if mention not in ("here", "channel") and not re.fullmatch(r"S[A-Z0-9]{2,}", mention):
            raise ConfigError("HEALTH_MENTION", f"expected a user-group ID (S…), here or channel, got {mention!r}")
    return {
        "health_interval": _seconds(get, "HEALTH_INTERVAL", "86400"),
        "dns_resolver": server,
        "health_mention": mention,
    }


def _public_url(name: str, value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"expected the bot's public base URL, e.g. https://bot.example.com, got {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password or not value.isascii():
        raise ConfigError(name, "expected a plain http(s) URL without user, query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(name, "the port is not a number") from None
    return value.strip().rstrip("/")


def _signing_settings(get: Env) -> dict[str, Any]:
    selector = (get("DKIM_SELECTOR") or DEFAULT_DKIM_SELECTOR).strip().lower()
    if not _LABELS.match(selector):
        raise ConfigError("DKIM_SELECTOR", f"not a DNS label (letters, digits, hyphens): {selector!r}")
    key = get("DKIM_PRIVATE_KEY")
    key_path = Path(key).expanduser() if key else None
    if key_path is not None and not key_path.is_file():
        raise ConfigError("DKIM_PRIVATE_KEY", f"no such file: {key}")
    return {"dkim_selector": selector, "dkim_private_key": key_path}


def _slack_settings(get: Env, require_slack: bool) -> dict[str, Any]:
    bot_token, app_token, signing_secret = get("SLACK_BOT_TOKEN"), get("SLACK_APP_TOKEN"), get("SLACK_SIGNING_SECRET")
    if require_slack:
        if not bot_token:
            raise ConfigError("SLACK_BOT_TOKEN", "required (the bot token, xoxb-…)")
        if not bot_token.startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN", "must be a bot token starting with xoxb-")
        if app_token and not app_token.startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN", "must be an app-level token starting with xapp-")
        if not app_token and not signing_secret:
            raise ConfigError("SLACK_SIGNING_SECRET", "required in HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)")
    api_url = get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
    if not re.match(r"^https?://", api_url):
        raise ConfigError("SLACK_API_URL", f"expected an http(s) URL, got {api_url!r}")
    if not api_url.endswith("/"):
        api_url += "/"
    port = get("PORT") or "3000"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("PORT", f"expected a port number, got {port!r}")
    host = get("HOST") or "127.0.0.1"
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise ConfigError("HOST", f"expected an address or host name, got {host!r}") from None
    approvals = get("APPROVALS_CHANNEL")
    if approvals and not re.fullmatch(r"[CGD][A-Z0-9_]{2,}", approvals):
        raise ConfigError("APPROVALS_CHANNEL", f"expected a channel ID (C…), got {approvals!r}")
    ops = get("OPS_CHANNEL")
    if ops and not re.fullmatch(r"[CGD][A-Z0-9_]{2,}", ops):
        raise ConfigError("OPS_CHANNEL", f"expected a channel ID (C…), got {ops!r}")
    return {
        "slack_bot_token": bot_token,
        "slack_signing_secret": signing_secret,
        "slack_app_token": app_token,
        "slack_api_url": api_url,
        "host": host,
        "port": int(port),
        "approvals_channel": approvals,
        "ops_channel": ops,
        "managers": _slack_id_list("MANAGERS", get("MANAGERS") or ""),
    }


def _seconds(get: Env, name: str, default: str, *, at_most: float | None = None) -> float:
    text = get(name) or default
    try:
        value = float(text)
        if value <= 0 or (at_most is not None and value > at_most):
            raise ValueError
    except ValueError:
        limit = f" between 0 and {at_most:g}" if at_most is not None else ""
        raise ConfigError(name, f"expected a positive number of seconds{limit}, got {text!r}") from None
    return value


def _tls_files(get: Env, cert_name: str, key_name: str) -> tuple[Path, Path] | None:
    cert, key = get(cert_name), get(key_name)
    if bool(cert) != bool(key):
        raise ConfigError(key_name if cert else cert_name, "set both the certificate and the key")
    if not (cert and key):
        return None
    for name, path in ((cert_name, cert), (key_name, key)):
        if not Path(path).is_file():
            raise ConfigError(name, f"no such file: {path}")
    return Path(cert), Path(key)


def _mail_settings(get: Env) -> dict[str, Any]:
    ports = get("SMTP_ALLOWED_PORTS") or "25,465,587,2525"
    try:
        allowed_ports = tuple(int(p) for p in ports.split(",") if p.strip())
        if not allowed_ports or not all(0 < p < 65536 for p in allowed_ports):
            raise ValueError
    except ValueError:
        raise ConfigError("SMTP_ALLOWED_PORTS", f"expected comma-separated port numbers, got {ports!r}") from None
    submission_tls = _tls_files(get, "SUBMISSION_TLS_CERT", "SUBMISSION_TLS_KEY")
    submission = _host_port("SUBMISSION_SMTP", get("SUBMISSION_SMTP") or "127.0.0.1:2587")
    if submission_tls is None and not is_loopback(submission.host):
        raise ConfigError(
            "SUBMISSION_TLS_CERT", f"the gateway listens on {submission.host}: AUTH off loopback needs TLS"
        )
    relay_url = get("RELAY_SMTP_URL")
    public_host, public_port = _public_host(get("SUBMISSION_PUBLIC_HOST"))
    return {
        "submission_public_host": public_host,
        "submission_public_port": public_port,
        "inbound_smtp": _host_port("INBOUND_SMTP", get("INBOUND_SMTP") or "127.0.0.1:2525"),
        "submission_smtp": submission,
        "relay": _relay("RELAY_SMTP_URL", relay_url) if relay_url else None,
        "smtp_allow_private_hosts": _bool("SMTP_ALLOW_PRIVATE_HOSTS", get("SMTP_ALLOW_PRIVATE_HOSTS") or "false"),
        "smtp_allowed_ports": allowed_ports,
        "tracking_timeout": _seconds(get, "TRACKING_TIMEOUT", "600"),
        "smtp_timeout": _seconds(get, "SMTP_TIMEOUT", "15", at_most=60),
        "submission_tls": submission_tls,
        "inbound_tls": _tls_files(get, "INBOUND_TLS_CERT", "INBOUND_TLS_KEY"),
    }


def _public_host(value: str | None) -> tuple[str | None, int | None]:
    """SUBMISSION_PUBLIC_HOST: HOST or HOST:PORT, the gateway's name as mailers reach it."""
    if not value:
        return None, None
    text = value.strip().lower()
    host, sep, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if sep and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise ConfigError("SUBMISSION_PUBLIC_HOST", f"expected HOST or HOST:PORT, got {value!r}")
    name = host.strip("[]")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        if not _DOMAIN.match(name) and name != "localhost":
            raise ConfigError("SUBMISSION_PUBLIC_HOST", f"not a host name or address: {value!r}") from None
    return name, int(port) if sep else None


def _url(name: str, value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(name, f"expected an http(s) URL without query, got {value!r}")
    return value.strip().rstrip("/")


_APPS = {
    oauth.MICROSOFT: (
        oauth.MICROSOFT_AUTHORIZE_URL,
        oauth.MICROSOFT_TOKEN_URL,
        oauth.MICROSOFT_JWKS_URL,
        oauth.MICROSOFT_SMTP,
    ),
    oauth.GOOGLE: (oauth.GOOGLE_AUTHORIZE_URL, oauth.GOOGLE_TOKEN_URL, oauth.GOOGLE_JWKS_URL, oauth.GOOGLE_SMTP),
}


def _sign_in_settings(get: Env) -> dict[str, Any]:
    """PUBLIC_URL and the "Sign in with Microsoft / Google" apps: a provider without its client id is not offered."""
    public_url = get("PUBLIC_URL")
    apps: list[OAuthAppSettings] = []
    for provider, (authorize, token, jwks, (smtp_host, smtp_port)) in _APPS.items():
        prefix = provider.upper()
        client_id, secret = get(f"{prefix}_CLIENT_ID"), get(f"{prefix}_CLIENT_SECRET")
        urls = [
            _url(f"{prefix}_{n}_URL", get(f"{prefix}_{n}_URL") or d)
            for n, d in (("AUTHORIZE", authorize), ("TOKEN", token), ("JWKS", jwks))
        ]
        smtp = _host_port(f"{prefix}_SMTP", get(f"{prefix}_SMTP") or f"{smtp_host}:{smtp_port}")
        if not client_id:
            continue
        if not secret:
            raise ConfigError(f"{prefix}_CLIENT_SECRET", f"required with {prefix}_CLIENT_ID (the app's client secret)")
        if not public_url:
            raise ConfigError(
                "PUBLIC_URL", f"required with {prefix}_CLIENT_ID: the provider redirects to PUBLIC_URL/oauth/callback"
            )
        authorize_url, token_url, jwks_url = urls
        apps.append(
            OAuthAppSettings(provider, client_id.strip(), secret.strip(), authorize_url, token_url, jwks_url, smtp)
        )
    return {"public_url": _public_url("PUBLIC_URL", public_url) if public_url else None, "oauth_apps": tuple(apps)}
