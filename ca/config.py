"""Configuration, built in one place: defaults -> TOML file -> ``AGENTCA_*`` environment.

Secrets never travel as values: only as ``*_file`` paths (``AGENTCA_HSM_PIN_FILE``), so they
stay out of argv, environment dumps and logs. The result is a frozen :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ca.errors import CAError, ErrorCode
from ca.names import validate_trust_domain
from ca.oids import OidArc, OidArcError

ENV_PREFIX = "AGENTCA_"
KEY_STORES = ("pkcs11", "software")
LOG_FORMATS = ("text", "json")
#: ``AGENTCA_*`` variables that are not settings: the file to read, and the test and
#: benchmark harness's own (prefixes). Any other unknown ``AGENTCA_*`` variable is an error.
ENV_NOT_SETTINGS = ("AGENTCA_CONFIG",)
#: The settings naming the PostgreSQL roles of decision 0028, owner first.
DB_ROLE_SETTINGS = ("db_owner_role", "db_writer_role", "db_ocsp_role", "db_auditor_role")
_SQL_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
ENV_HARNESS_PREFIXES = ("AGENTCA_TEST_", "AGENTCA_BENCH_", "AGENTCA_FAULTS_")


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "agentca"


@dataclass(frozen=True)
class Settings:
    """Everything the CA, OCSP responder and CLI need to know about their deployment."""

    data_dir: Path = field(default_factory=_default_data_dir)
    database_url: str = ""  # empty: SQLite file in data_dir
    # PostgreSQL least-privilege roles (decision 0028): `agentca db upgrade` (and the first run)
    # migrate through migration_database_url, connected as the schema owner; `agentca db roles`
    # creates the roles below and grants each only what its processes use
    migration_database_url: str = ""  # empty: database_url
    db_owner_role: str = "agentca_owner"  # owns the schema's tables; runs the migrations
    db_writer_role: str = "agentca_ca"  # the CA API and CLI (database_url)
    db_ocsp_role: str = "agentca_ocsp"  # the OCSP responder (ocsp_database_url): SELECT only
    db_auditor_role: str = "agentca_auditor"  # reads the ledger tables only
    # HSM (PKCS#11)
    pkcs11_module: str = ""  # empty: find SoftHSM2
    token_label: str = "agentca"
    hsm_pin_file: str = ""  # empty: data_dir/secrets/user.pin
    softhsm2_conf: str = ""  # empty: data_dir/hsm/softhsm2.conf when SoftHSM2 is managed by us
    manage_softhsm: bool = True  # create the SoftHSM2 token on first run
    # where the CA keys live: "pkcs11" (the token above) or "software", a throwaway dev mode
    # whose keys live in this process's memory and vanish with it (needs dev_mode = true);
    # docs/operators.md "Throwaway dev mode"
    key_store: str = "pkcs11"
    dev_mode: bool = False  # accept settings that are unsafe outside development
    # OCSP responder (decision 0018): its keys live in their own token, never with a CA key,
    # and it may connect as a SELECT-only database role
    ocsp_token_label: str = "agentca-ocsp"
    ocsp_pin_file: str = ""  # empty: data_dir/secrets/ocsp-user.pin
    ocsp_database_url: str = ""  # empty: database_url
    # the root key on its own token, attached only for ceremonies (decision 0034); empty:
    # the root key stays in the CA token
    root_token_label: str = ""
    root_pin_file: str = ""  # empty: data_dir/secrets/root-user.pin
    root_crl_validity_days: int = 90  # nextUpdate of the root CRL signed at a ceremony
    # a streaming replica for the CA API's read-only endpoints (inventory, agents, certificate
    # lookups); used only while it trails the primary by at most read_max_lag_ms, else reads
    # go to database_url (decision 0029)
    read_database_url: str = ""  # empty: database_url
    read_max_lag_ms: int = 1000
    # naming and profile
    organization: str = "agentca development"
    trust_domain: str = "agentca.local"
    root_common_name: str = "agentca Root CA"
    issuing_common_name: str = "agentca Issuing CA"
    root_key_type: str = "ec-p384"
    issuing_key_type: str = "ec-p256"
    root_validity_days: int = 3650
    issuing_validity_days: int = 1825
    default_validity_hours: int = 12
    max_validity_hours: int = 24 * 7
    # the OID arc of a new CA's agent OIDs (decision 0022; empty: the RFC 5612 example arc
    # 1.3.6.1.4.1.32473.2026, for evaluation only); read by 'agentca init', then recorded
    # with the issuers: an existing CA moves with 'agentca oid-arc set'
    oid_arc: str = ""
    allowed_agent_key_types: tuple[str, ...] = (
        "ec-p256",
        "ec-p384",
        "rsa-2048",
        "rsa-3072",
        "rsa-4096",
        "ed25519",
    )
    # URLs published inside certificates
    public_base_url: str = ""  # empty: http://<listen_host>:<listen_port>
    ocsp_url: str = ""  # empty: http://<listen_host>:<ocsp_listen_port>/ocsp
    crl_base_url: str = ""  # empty: public_base_url + /crl
    crl_publish_dir: str = ""  # empty: data_dir/crl (where the CRL publisher writes)
    crl_interval_seconds: int = 3600  # full CRL every interval; nextUpdate = 2 x interval
    # HTTP services
    listen_host: str = "127.0.0.1"
    listen_port: int = 8400
    ocsp_listen_port: int = 8401
    workers: int = 2
    threads: int = 4  # per CA API worker: overlaps database round trips
    max_request_bytes: int = 64 * 1024
    enroll_rate_per_second: int = 20  # per client address and worker process
    enroll_burst: int = 40
    auth_failure_rate_per_second: int = 2  # failed authentications allowed per client address
    auth_failure_burst: int = 20
    trusted_proxy_hops: int = 0  # reverse proxies in front that set X-Forwarded-For/-Proto
    enrollment_token_hours: int = 24
    # runtime attestation (decision 0051): a TOML file of [[attestor]] public keys, each with
    # its key id and environments (docs/operators.md "Runtime attestation"); empty: none
    attestors_file: str = ""
    api_token_default_ttl_days: int = 90  # lifetime of an API token created without a TTL
    api_token_max_ttl_days: int = 365  # no API token lives longer
    # clock: refuse to sign while this host's clock and the database server's differ by more
    # (0: never refuse); measured at start and every clock_check_interval_seconds
    max_clock_skew_seconds: int = 5
    clock_check_interval_seconds: int = 30
    # reconciliation (docs/decisions/0014-crash-safe-enrollment.md): a reservation still
    # pending after this many seconds is marked failed and its enrollment token released;
    # longer than any request can take (the CA API worker's deadlines end a request first)
    pending_reconcile_seconds: int = 120
    reconcile_interval_seconds: int = 30  # how often each CA API worker reconciles
    # the CA API's access log leaves out 304 Not Modified answers (conditional polls of the
    # model inventory, CRLs and the SPIFFE bundle that found nothing new) unless this is true
    access_log_not_modified: bool = False
    # observability (decision 0031): log lines as text or one JSON object per line; and the
    # client networks that may read /metrics of the CA API and the responder (empty: nobody)
    log_format: str = "text"
    metrics_networks: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    # signed models (decision 0052): model producers as NAME=PEM-FILE (public keys and/or CA
    # certificates; a name may repeat), and the environments whose inventory takes only
    # models with a verified OMS signature from one of them
    model_producers: tuple[str, ...] = ()
    signed_model_environments: tuple[str, ...] = ()
    # web console (decision 0054): a session ends after this many idle seconds, and this many
    # seconds after sign-in whatever its use; its cookie is Secure when served over TLS (or
    # always, with console_secure_cookie: behind a TLS proxy that sets no X-Forwarded-Proto)
    console_idle_seconds: int = 900
    console_session_seconds: int = 28800
    console_secure_cookie: bool = False

    def __post_init__(self) -> None:
        try:
            validate_trust_domain(self.trust_domain)
        except CAError as exc:
            raise CAError(ErrorCode.CONFIG, f"setting 'trust_domain': {exc.detail}") from None
        object.__setattr__(self, "key_store", self.key_store.strip().lower())
        if self.key_store not in KEY_STORES:
            raise CAError(
                ErrorCode.CONFIG,
                f"setting 'key_store' must be one of {', '.join(KEY_STORES)}, "
                f"not {self.key_store!r}",
            )
        roles = [(n, getattr(self, n)) for n in DB_ROLE_SETTINGS]
        for name, role in roles:
            if (
                not _SQL_ROLE.fullmatch(role)
                or role in {"public", "postgres", "none"}
                or role.startswith("pg_")
            ):
                raise CAError(
                    ErrorCode.CONFIG,
                    f"setting {name!r} must be a PostgreSQL role name of lowercase letters, "
                    "digits and '_', at most 63, starting with a letter or '_' (not public, "
                    f"postgres or pg_*), not {role!r}",
                )
        if len({role for _, role in roles}) != len(roles):
            raise CAError(
                ErrorCode.CONFIG,
                f"settings {', '.join(DB_ROLE_SETTINGS)} must name four different roles: "
                "each role is granted only what its own processes use",
            )
        if self.read_max_lag_ms < 200:
            raise CAError(
                ErrorCode.CONFIG,
                "setting 'read_max_lag_ms' must be at least 200 (the replica's lag is checked "
                f"every 100 ms), not {self.read_max_lag_ms}",
            )
        object.__setattr__(self, "log_format", self.log_format.strip().lower())
        if self.log_format not in LOG_FORMATS:
            raise CAError(
                ErrorCode.CONFIG,
                f"setting 'log_format' must be one of {', '.join(LOG_FORMATS)}, "
                f"not {self.log_format!r}",
            )
        for network in self.metrics_networks:
            try:
                ipaddress.ip_network(network.strip(), strict=False)
            except ValueError:
                raise CAError(
                    ErrorCode.CONFIG,
                    "setting 'metrics_networks' must list IP networks such as 127.0.0.1/32 "
                    f"or 10.0.0.0/8, not {network!r}",
                ) from None
        _check_root_token(self)
        if self.oid_arc.strip():
            try:
                OidArc(self.oid_arc.strip())
            except OidArcError as exc:
                raise CAError(ErrorCode.CONFIG, f"setting 'oid_arc': {exc}") from None

    # -- derived values -------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'agentca.sqlite3'}"

    @property
    def effective_migration_database_url(self) -> str:
        """Where migrations run: ``migration_database_url``, else the CA's database."""
        return self.migration_database_url or self.effective_database_url

    @property
    def effective_pin_file(self) -> Path:
        return Path(self.hsm_pin_file) if self.hsm_pin_file else self.data_dir / "secrets/user.pin"

    @property
    def effective_ocsp_pin_file(self) -> Path:
        return (
            Path(self.ocsp_pin_file)
            if self.ocsp_pin_file
            else self.data_dir / "secrets/ocsp-user.pin"
        )

    @property
    def root_offline(self) -> bool:
        """The root key is on its own token, attached only for ceremonies (decision 0034)."""
        return bool(self.root_token_label)

    @property
    def effective_root_pin_file(self) -> Path:
        return (
            Path(self.root_pin_file)
            if self.root_pin_file
            else self.data_dir / "secrets/root-user.pin"
        )

    @property
    def effective_ocsp_database_url(self) -> str:
        return self.ocsp_database_url or self.effective_database_url

    @property
    def effective_public_base_url(self) -> str:
        """Where this CA's API is reached: ``public_base_url``, else the listen address."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"http://{_url_host(self.listen_host)}:{self.listen_port}"

    @property
    def effective_ocsp_url(self) -> str:
        return self.ocsp_url or (
            f"http://{_url_host(self.listen_host)}:{self.ocsp_listen_port}/ocsp"
        )

    @property
    def effective_crl_base_url(self) -> str:
        return (self.crl_base_url or self.effective_public_base_url + "/crl").rstrip("/")

    @property
    def pending_bound(self) -> timedelta:
        return timedelta(seconds=max(1, self.pending_reconcile_seconds))

    @property
    def enrollment_ttl(self) -> timedelta:
        return timedelta(hours=self.enrollment_token_hours)

    @property
    def api_token_default_ttl(self) -> timedelta:
        return timedelta(days=self.api_token_default_ttl_days)

    @property
    def api_token_max_ttl(self) -> timedelta:
        return timedelta(days=self.api_token_max_ttl_days)

    @property
    def effective_crl_publish_dir(self) -> Path:
        return Path(self.crl_publish_dir) if self.crl_publish_dir else self.data_dir / "crl"

    @property
    def default_validity(self) -> timedelta:
        return timedelta(hours=self.default_validity_hours)

    @property
    def max_validity(self) -> timedelta:
        return timedelta(hours=self.max_validity_hours)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (for tests and CLI overrides)."""
        return dataclasses.replace(self, **changes)


def _check_root_token(s: Settings) -> None:
    """``root_token_label``: another token than the CA's and the responder's; its PIN file
    is not theirs; ``root_crl_validity_days`` within 1..366."""
    if not 1 <= s.root_crl_validity_days <= 366:
        raise CAError(
            ErrorCode.CONFIG,
            "setting 'root_crl_validity_days' must be between 1 and 366 (days until the next "
            f"root key ceremony must sign a new root CRL), not {s.root_crl_validity_days}",
        )
    if not s.root_token_label:
        if s.root_pin_file:
            raise CAError(
                ErrorCode.CONFIG,
                "setting 'root_pin_file' needs 'root_token_label': without it the root key "
                "is in the CA token, whose PIN is hsm_pin_file",
            )
        return
    if len(s.root_token_label.encode("utf-8")) > 32 or s.root_token_label != (
        s.root_token_label.strip()
    ):
        raise CAError(
            ErrorCode.CONFIG,
            "setting 'root_token_label' must be a PKCS#11 token label of at most 32 bytes "
            f"without surrounding spaces, not {s.root_token_label!r}",
        )
    if s.root_token_label in (s.token_label, s.ocsp_token_label):
        raise CAError(
            ErrorCode.CONFIG,
            f"setting 'root_token_label' ({s.root_token_label!r}) must name another token than "
            "token_label and ocsp_token_label: the root key's token is attached only for "
            "ceremonies",
        )
    root_pin = s.effective_root_pin_file
    for name, other in (
        ("hsm_pin_file", s.effective_pin_file),
        ("ocsp_pin_file", s.effective_ocsp_pin_file),
    ):
        if root_pin.absolute() == other.absolute():
            raise CAError(
                ErrorCode.CONFIG,
                f"setting 'root_pin_file' names the same file as {name} ({other}): the root "
                "token needs a PIN of its own",
            )


def _url_host(listen_host: str) -> str:
    """The host part of a URL for a listen address (wildcards: loopback; IPv6 bracketed)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen_host, listen_host)
    return f"[{host}]" if ":" in host else host


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
#: Settings whose value may carry a secret (a password in a database URL).
_URL_SETTINGS_WITH_CREDENTIALS = (
    "database_url",
    "ocsp_database_url",
    "migration_database_url",
    "read_database_url",
)


def _unknown(what: str, name: str, known: list[str]) -> CAError:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return CAError(ErrorCode.CONFIG, f"{what} {name!r} is not a setting{hint}")


def _coerce(name: str, raw: Any) -> Any:
    """Turn a TOML or environment value into the field's type, or raise CONFIG."""
    kind = _FIELDS[name].type
    try:
        if kind == "Path":
            return Path(str(raw)).expanduser()
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if kind.startswith("tuple"):
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise CAError(ErrorCode.CONFIG, f"setting '{name}' has an invalid value") from exc


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> Settings:
    """Build settings from defaults, then the TOML file, then ``AGENTCA_*`` variables.

    The TOML file is ``config_file`` or ``$AGENTCA_CONFIG``; keys are the field names, at the
    top level or under an ``[agentca]`` table. Unknown keys and unknown ``AGENTCA_*``
    variables are errors with a "did you mean", never a silent typo.
    """
    return load_settings_with_sources(environ, config_file)[0]


def load_settings_with_sources(
    environ: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> tuple[Settings, dict[str, str]]:
    """:func:`load_settings` plus where each value came from (``default``, the file, ``env``)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources = dict.fromkeys(_FIELDS, "default")
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise CAError(ErrorCode.CONFIG, f"configuration file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise CAError(ErrorCode.CONFIG, f"configuration file {path}: {exc}") from exc
        table = doc.get("agentca", doc)
        if not isinstance(table, dict):
            raise CAError(ErrorCode.CONFIG, f"configuration file {path}: [agentca] is not a table")
        for key, raw in table.items():
            if key not in _FIELDS:
                raise _unknown(f"configuration file {path}: key", key, list(_FIELDS))
            values[key] = _coerce(key, raw)
            sources[key] = f"file {path}"
    known_env = {ENV_PREFIX + name.upper(): name for name in _FIELDS}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in ENV_NOT_SETTINGS:
            continue
        if var == ENV_PREFIX + "HSM_PIN":
            raise CAError(
                ErrorCode.CONFIG,
                "AGENTCA_HSM_PIN is not accepted: put the PIN in a file and set "
                "AGENTCA_HSM_PIN_FILE",
            )
        if var.startswith(ENV_HARNESS_PREFIXES):
            continue
        if var not in known_env:
            raise _unknown("environment variable", var, [*known_env, *ENV_NOT_SETTINGS])
        raw_env = env[var]
        if raw_env != "":
            values[known_env[var]] = _coerce(known_env[var], raw_env)
            sources[known_env[var]] = f"env {var}"
    return Settings(**values), sources


def redacted(name: str, value: object) -> object:
    """``value`` of setting ``name`` fit to print: passwords in database URLs replaced."""
    if name in _URL_SETTINGS_WITH_CREDENTIALS and isinstance(value, str) and value:
        parts = urlsplit(value)
        if parts.password is not None:
            netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
            return urlunsplit(parts._replace(netloc=netloc))
    return value


def effective_items(settings: Settings) -> list[tuple[str, object]]:
    """Every setting with its value (paths as strings, tuples as lists), secrets redacted."""
    out: list[tuple[str, object]] = []
    for name in _FIELDS:
        value: object = getattr(settings, name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out.append((name, redacted(name, value)))
    return out


def derived_items(settings: Settings) -> list[tuple[str, str]]:
    """The values the empty defaults stand for (``effective_*``), secrets redacted."""
    return [
        ("database_url", str(redacted("database_url", settings.effective_database_url))),
        (
            "ocsp_database_url",
            str(redacted("ocsp_database_url", settings.effective_ocsp_database_url)),
        ),
        (
            "migration_database_url",
            str(redacted("migration_database_url", settings.effective_migration_database_url)),
        ),
        ("hsm_pin_file", str(settings.effective_pin_file)),
        ("ocsp_pin_file", str(settings.effective_ocsp_pin_file)),
        ("public_base_url", settings.effective_public_base_url),
        ("ocsp_url", settings.effective_ocsp_url),
        ("crl_base_url", settings.effective_crl_base_url),
        ("crl_publish_dir", str(settings.effective_crl_publish_dir)),
    ]


def _listens(settings: Settings) -> list[tuple[str, str, int]]:
    host = settings.listen_host
    return [
        ("the CA API", host, settings.listen_port),
        ("the OCSP responder", host, settings.ocsp_listen_port),
    ]


def url_warnings(settings: Settings) -> list[str]:
    """Certificate URLs (CRL, OCSP, CA) that point where nothing of this CA listens.

    Only checked when the URL names an IP literal or ``localhost`` and no proxy is declared
    (``trusted_proxy_hops == 0``): a DNS name may well route here, and cannot be checked.
    """
    if settings.trusted_proxy_hops:
        return []
    urls = [
        ("public_base_url", settings.effective_public_base_url, "the CA API"),
        ("crl_base_url", settings.effective_crl_base_url, "the CA API"),
        ("ocsp_url", settings.effective_ocsp_url, "the OCSP responder"),
    ]
    listen = {what: (host, port) for what, host, port in _listens(settings)}
    local = {"localhost", "127.0.0.1", "::1"}
    out: list[str] = []
    for name, url, served_by in urls:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not _is_ip_literal(host) and host != "localhost":
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        want_host, want_port = listen[served_by]
        wildcard = want_host in {"0.0.0.0", "::", ""}
        same_host = wildcard or host == want_host or (host in local and want_host in local)
        if port != want_port or not same_host:
            out.append(
                f"{name} {url} points at {host}:{port}, but {served_by} of this CA listens on "
                f"{want_host or '*'}:{want_port}: certificates would send verifiers elsewhere"
            )
    return out


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def read_secret_file(path: Path, what: str) -> str:
    """Read a secret (PIN, token) from a file, stripped of its trailing newline.

    Like ssh with private keys, a file that its group or others may read or write is refused.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise CAError(ErrorCode.CONFIG, f"{what} file {path} does not exist") from exc
    except OSError as exc:
        raise CAError(
            ErrorCode.CONFIG, f"{what} file {path} cannot be read: {exc.strerror}"
        ) from exc
    if mode & 0o077:
        raise CAError(
            ErrorCode.CONFIG,
            f"{what} file {path} has permissions {stat.S_IMODE(mode):04o}: group and others "
            f"must have no access (chmod 600 {path})",
        )
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError as exc:
        raise CAError(ErrorCode.CONFIG, f"{what} file {path} does not exist") from exc
    except OSError as exc:
        raise CAError(
            ErrorCode.CONFIG, f"{what} file {path} cannot be read: {exc.strerror}"
        ) from exc
    if not text:
        raise CAError(ErrorCode.CONFIG, f"{what} file {path} is empty")
    return text
