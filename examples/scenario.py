"""The limit-order scenario as reusable steps: a CA data directory set up through the
``agentca`` CLI, the CA API, the OCSP responder and the gateway as subprocesses on loopback,
and an enrolled agent. Used by ``examples/demo.py`` and the end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agent import Agent, RuntimeProvenance, generate_key, model_digest, prompt_digest_file

AGENT = "ExecutionAgent-ETH-01"
MODEL_TYPE = "claude-3.5-sonnet-v2"
OFFICER = "compliance-officer@enterprise.io"
ENVIRONMENT = "production"
TRUST_DOMAIN = "agentca.local"  # the CA's default trust_domain
SCOPES = ("submit_limit_order", "query_anonymized_order_book")
PROMPT = b"You are an execution agent. Place limit orders only; never market orders.\n"
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError) as exc:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{url}: the server exited ({proc.returncode})") from exc
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@dataclass
class Scenario:
    """A CA data directory plus the work files of the scenario."""

    work: Path
    env: dict[str, str]
    agentca: str
    ca_port: int = field(default_factory=free_port)
    ocsp_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    operator_token: str = ""
    gateway_token: str = ""
    logs: list[Path] = field(default_factory=list)

    @classmethod
    def create(
        cls, work: Path, database_url: str | None = None, agentca: str | None = None
    ) -> Scenario:
        work.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
        env.pop("SOFTHSM2_CONF", None)
        env["AGENTCA_DATA_DIR"] = str(work / "ca-data")
        if database_url:
            env["AGENTCA_DATABASE_URL"] = database_url
        exe = agentca or str(Path(sys.executable).with_name("agentca"))
        s = cls(work, env, exe)
        env["AGENTCA_OCSP_URL"] = s.ocsp_url + "/ocsp"
        env["AGENTCA_PUBLIC_BASE_URL"] = s.ca_url
        env["AGENTCA_ENROLL_RATE_PER_SECOND"] = "100"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        return s

    @property
    def ca_url(self) -> str:
        return f"http://127.0.0.1:{self.ca_port}"

    @property
    def ocsp_url(self) -> str:
        return f"http://127.0.0.1:{self.ocsp_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def model_dir(self) -> Path:
        return self.work / "model"

    @property
    def prompt_file(self) -> Path:
        return self.work / "prompt.txt"

    @property
    def root_pem(self) -> Path:
        return self.work / "root.pem"

    def cli(self, *args: str) -> str:
        """Run ``agentca <args>``; the stripped stdout (raises with stderr on failure)."""
        result = subprocess.run(
            [self.agentca, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"agentca {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout.strip()

    def setup(self) -> None:
        """Initialise the CA, the model and prompt files, and register the agent."""
        self.model_dir.mkdir(exist_ok=True)
        (self.model_dir / "config.json").write_text('{"architecture":"demo","layers":2}\n')
        (self.model_dir / "weights.bin").write_bytes(bytes(range(256)) * 4096)
        self.prompt_file.write_bytes(PROMPT)
        self.cli("init")
        self.root_pem.write_text(self.cli("chain", "--root-only") + "\n")
        for scope in (*SCOPES, "halt_trading"):
            self.cli("scope", "add", scope)
        model = model_digest(self.model_dir).hex()
        prompt = prompt_digest_file(self.prompt_file).hex()
        self.cli("model", "add", model, "--model-type", MODEL_TYPE, "--environment", ENVIRONMENT)
        scope_args = [a for s in SCOPES for a in ("--scope", s)]
        self.cli(
            "agent", "register", AGENT, "--officer", OFFICER, "--environment", ENVIRONMENT,
            "--model-type", MODEL_TYPE, "--model-digest", model, "--prompt-digest", prompt,
            "--organization", "Enterprise Inc", *scope_args, "--max-validity", "12h",
        )  # fmt: skip
        self.operator_token = self.cli("apitoken", "create", "ops", "--role", "operator")
        self.gateway_token = self.cli("apitoken", "create", "gateway", "--role", "read-only")
        (self.work / "gateway.token").write_text(self.gateway_token + "\n")
        os.chmod(self.work / "gateway.token", 0o600)

    def enrollment_token(self) -> str:
        return self.cli("token", "create", AGENT, "--ttl", "15m")

    @contextmanager
    def _process(self, name: str, args: list[str], health: str) -> Iterator[None]:
        log = self.work / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_http(health, proc=proc)
                yield
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)

    @contextmanager
    def servers(
        self, gateway: bool = True, max_status_age: float = 1.0, inventory_refresh: float = 0.5
    ) -> Iterator[None]:
        """Run the CA API, the OCSP responder and (optionally) the gateway until exit."""
        with ExitStack() as stack:
            stack.enter_context(
                self._process(
                    "ca",
                    [self.agentca, "serve", "--workers", "1", "--port", str(self.ca_port)],
                    self.ca_url + "/health",
                )
            )
            stack.enter_context(
                self._process(
                    "ocsp",
                    [
                        self.agentca,
                        "ocsp",
                        "serve",
                        "--workers",
                        "2",
                        "--port",
                        str(self.ocsp_port),
                    ],
                    self.ocsp_url + "/health",
                )
            )
            if gateway:
                stack.enter_context(
                    self._process(
                        "gateway",
                        [
                            sys.executable,
                            "-m",
                            "examples.orderbook",
                            "--port",
                            str(self.gateway_port),
                            "--ca-url",
                            self.ca_url,
                            "--trust-anchor",
                            str(self.root_pem),
                            "--inventory-token-file",
                            str(self.work / "gateway.token"),
                            "--max-status-age",
                            str(max_status_age),
                            "--inventory-refresh",
                            str(inventory_refresh),
                            "--audience",
                            self.gateway_url,
                            "--trust-domain",
                            TRUST_DOMAIN,
                        ],
                        self.gateway_url + "/health",
                    )
                )
            yield

    def new_agent(self, **kwargs: object) -> Agent:
        """An agent running the registered model and prompt (not enrolled yet)."""
        runtime = RuntimeProvenance(
            MODEL_TYPE, self.model_dir, prompt_path=self.prompt_file, recheck_seconds=0.0
        )
        return Agent(
            AGENT,
            generate_key("ec-p256"),
            runtime,
            self.ca_url,
            organization="Enterprise Inc",
            **kwargs,  # type: ignore[arg-type]
        )

    @contextmanager
    def gateway(
        self,
        module: str = "examples.orderbook",
        *extra: str,
        port: int | None = None,
        redis_url: str | None = None,
        audience: str | None = None,
        max_status_age: float = 1.0,
        inventory_refresh: float = 0.5,
    ) -> Iterator[str]:
        """One more order-book gateway process (``module``: ``examples.orderbook`` or
        ``examples.orderbook_asgi``; ``extra``: its own options, e.g. ``--server gunicorn``)
        on ``port`` (default: a free one), sharing the Redis at ``redis_url`` if given, for
        ``audience`` (default: its own URL; give several processes one audience to have
        them serve one origin, as workers behind a load balancer do); yields its URL.
        Run :meth:`servers` (``gateway=False`` is enough) around it."""
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        args = [
            sys.executable, "-m", module, "--port", str(port), "--ca-url", self.ca_url,
            "--trust-anchor", str(self.root_pem),
            "--inventory-token-file", str(self.work / "gateway.token"),
            "--max-status-age", str(max_status_age), "--inventory-refresh", str(inventory_refresh),
            "--audience", audience or url, "--trust-domain", TRUST_DOMAIN, *extra,
        ]  # fmt: skip
        if redis_url:
            args += ["--redis-url", redis_url]
        with self._process(f"gateway-{module.rsplit('.', 1)[-1]}-{port}", args, url + "/health"):
            yield url
