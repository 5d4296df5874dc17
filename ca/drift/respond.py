"""Responses to a drift alert: a structured log line, metrics, an optional webhook and, in
hold mode, a certificateHold of the agent's live certificates through the CA's one
revocation path (``Revocations.revoke``), its ledger entry carrying the evidence.

Nothing here may stop the analysis or the other responses: the webhook has a bounded
timeout and its failure is logged, a certificate already on hold is left as it is, and an
alert already raised by an earlier run over the same records is not raised again.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ca.drift.alerts import AlertState, StoredAlert, alert_id
from ca.drift.analyser import Alert, RunResult, instant
from ca.errors import CAError, ErrorCode
from ca.logs import json_line
from ca.records import CertificateRecord
from ca.requests import RevocationCriteria
from ca.revocation import RevocationReason

LOGGER = "agentca.drift"
log = logging.getLogger(LOGGER)

LedgerWrite = Callable[[str, str, Mapping[str, Any]], None]
"""``(actor, event, body)``: append one issuance-ledger entry."""


class Remediation(Protocol):
    """The part of the CA a hold needs (``CertificateAuthority`` is one)."""

    def matching_live(self, criteria: RevocationCriteria) -> list[CertificateRecord]: ...

    def revoke(
        self,
        serial_hex: str,
        reason: RevocationReason,
        actor: str,
        issuer_name: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> CertificateRecord: ...


@dataclass
class Outcome:
    """What was done about one alert."""

    alert_id: str
    agent: str
    action: str  # "alert", "hold", or "repeat" (raised by an earlier run: nothing done)
    score: str
    held: list[str] = field(default_factory=list)
    webhook: str | None = None  # "ok", or why it failed; None when no webhook is set

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "agent": self.agent,
            "action": self.action,
            "score": self.score,
            "held": self.held,
            "webhook": self.webhook,
        }


def evidence_of(alert: Alert, ident: str) -> dict[str, Any]:
    """The evidence an alert's ledger entries carry (canonical JSON: strings and integers)."""
    body = alert.to_json()
    body["alert_id"] = ident
    return body


class Responder:
    """Acts on a run's alerts (see the module docstring)."""

    def __init__(
        self,
        actor: str,
        now: float,
        state: AlertState | None = None,
        ledger: LedgerWrite | None = None,
        authority: Remediation | None = None,
        webhook_url: str = "",
        webhook_timeout: float = 2.0,
    ) -> None:
        self.actor = actor
        self.now = now
        self.state = state
        self.ledger = ledger
        self.authority = authority
        self.webhook_url = webhook_url
        self.webhook_timeout = webhook_timeout

    def respond(self, alerts: Sequence[Alert]) -> list[Outcome]:
        """Respond to each alert; saves the state file once at the end."""
        outcomes = [self._one(a) for a in alerts]
        if self.state is not None:
            self.state.save()
        return outcomes

    def _one(self, alert: Alert) -> Outcome:
        ident = alert_id(alert.worst.agent, instant(alert.first.end))
        score = f"{alert.worst.score:.3f}"
        if self.state is not None and self.state.get(ident) is not None:
            return Outcome(ident, alert.worst.agent, "repeat", score)
        evidence = evidence_of(alert, ident)
        hold = alert.worst.mode == "hold" and self.authority is not None
        outcome = Outcome(ident, alert.worst.agent, "hold" if hold else "alert", score)
        if self.ledger is not None:
            self.ledger(self.actor, "drift.alert", evidence)
        if hold:
            outcome.held = self._hold(alert.worst.agent, evidence)
        log.warning(
            json_line(
                "warning",
                LOGGER,
                "drift alert",
                self.now,
                action=outcome.action,
                held=outcome.held,
                **evidence,
            )
        )
        if self.webhook_url:
            outcome.webhook = self._webhook(
                evidence | {"action": outcome.action, "held": outcome.held}
            )
        if self.state is not None:
            self.state.alerts.append(
                StoredAlert(
                    id=ident,
                    agent=alert.worst.agent,
                    environment=alert.worst.environment,
                    raised_at=instant(self.now),
                    mode=alert.worst.mode,
                    evidence=evidence,
                    held=outcome.held,
                )
            )
        return outcome

    def _hold(self, agent: str, evidence: Mapping[str, Any]) -> list[str]:
        assert self.authority is not None
        held = []
        for record in self.authority.matching_live(RevocationCriteria(agent_name=agent)):
            try:
                self.authority.revoke(
                    record.serial_hex,
                    RevocationReason.CERTIFICATE_HOLD,
                    self.actor,
                    record.issuer_name,
                    evidence={"drift": dict(evidence)},
                )
            except CAError as exc:
                if exc.code not in (ErrorCode.ALREADY_REVOKED, ErrorCode.CONFLICT):
                    raise
                continue  # revoked or held meanwhile: nothing to add
            held.append(record.serial_hex)
        return held

    def _webhook(self, body: Mapping[str, Any]) -> str:
        data = json.dumps(body, sort_keys=True).encode()
        request = urllib.request.Request(
            self.webhook_url,
            data=data,
            headers={"Content-Type": "application/json", "User-Agent": "agentca-drift"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.webhook_timeout) as reply:
                reply.read(4096)
            return "ok"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = f"webhook failed: {getattr(exc, 'reason', exc)}"
            log.warning(json_line("warning", LOGGER, why, self.now, url=self.webhook_url))
            return why


def metrics_text(result: RunResult, outcomes: Sequence[Outcome]) -> bytes:
    """One run's figures in the Prometheus text format (for node_exporter's textfile
    collector): low-cardinality labels only, never an agent name or a serial."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    class _Run:
        def collect(self) -> Any:
            records = GaugeMetricFamily(
                "agentca_drift_records", "Action records the last drift run read"
            )
            records.add_metric([], result.records)
            yield records
            windows = GaugeMetricFamily(
                "agentca_drift_windows_scored", "Windows the last drift run scored"
            )
            windows.add_metric([], sum(a.scored_windows for a in result.agents.values()))
            yield windows
            agents = GaugeMetricFamily(
                "agentca_drift_agents",
                "Agents seen by the last drift run, by status",
                labels=["status"],
            )
            for status, n in sorted(Counter(a.status for a in result.agents.values()).items()):
                agents.add_metric([status], n)
            yield agents
            top = GaugeMetricFamily(
                "agentca_drift_max_score", "Highest window score of the last drift run"
            )
            top.add_metric([], max((a.max_score for a in result.agents.values()), default=0.0))
            yield top
            alerts = GaugeMetricFamily(
                "agentca_drift_alerts",
                "Alerts of the last drift run by action (alert, hold, repeat)",
                labels=["action"],
            )
            counts = Counter(o.action for o in outcomes)
            for action in ("alert", "hold", "repeat"):
                alerts.add_metric([action], counts.get(action, 0))
            yield alerts
            held = GaugeMetricFamily(
                "agentca_drift_held_certificates", "Certificates the last drift run put on hold"
            )
            held.add_metric([], sum(len(o.held) for o in outcomes))
            yield held

    registry = CollectorRegistry()
    registry.register(_Run())
    return bytes(generate_latest(registry))
