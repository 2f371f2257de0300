"""Whether a point of sale passed a scenario: what it concluded and what it did on the wire.

Pure: it reads what the wire edge recorded (WireRecord) and what the POS
concluded (PosRun), and says, in French for the people who read the report,
what went wrong and why it matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalogue import CONCLUSION_BY_EXIT, Scenario

WORDS = {"approved": "paiement accepté", "refused": "paiement refusé",
         "unknown": "issue inconnue", "failure": "échec de la caisse"}

# Why a wrong conclusion matters, by (expected, concluded).
CONSEQUENCES = {
    ("approved", "refused"): "le terminal a débité la carte : la caisse fera payer le client "
                             "une seconde fois",
    ("approved", "unknown"): "le terminal a débité la carte : la caisse fait vérifier un "
                             "paiement fait (la file attend, le client risque de payer deux "
                             "fois)",
    ("refused", "approved"): "le terminal n'a rien débité : la marchandise part sans être "
                             "payée",
    ("refused", "unknown"): "le terminal dit clairement que rien n'est fait : la caisse "
                            "pouvait proposer de recommencer",
    ("unknown", "approved"): "rien ne prouve que ce paiement est fait : la marchandise peut "
                             "partir sans être payée",
    ("unknown", "refused"): "le paiement a peut-être été fait : recommencer peut faire payer "
                            "le client deux fois",
}


@dataclass
class WireRecord:
    """What the POS did on the wire during one scenario (filled by the wire edge)."""

    connections: int = 0
    requests: list[bytes] = field(default_factory=list)  # each whole request, as received
    malformed: list[str] = field(default_factory=list)  # why each broken message broke
    sent: bytes = b""  # what the terminal wrote, on every connection
    open_connections: int = 0
    closed_by_pos: int = 0  # connections the POS closed (before the terminal did)


@dataclass(frozen=True)
class PosRun:
    """What the POS concluded: its exit status (None when it had to be stopped)."""

    exit_status: int | None
    elapsed: float
    output: str = ""  # the end of what it printed, to explain a failure
    stopped_after: float | None = None  # set when the kit stopped it after this long
    failure: str | None = None  # what the POS showed instead of an outcome (told by a tester)

    @property
    def conclusion(self) -> str:
        if self.exit_status is None:
            return "failure"
        return CONCLUSION_BY_EXIT.get(self.exit_status, "failure")


@dataclass(frozen=True)
class Verdict:
    scenario: Scenario
    run: PosRun
    wire: WireRecord
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def concluded(self) -> str:
        return self.run.conclusion


def judge(scenario: Scenario, run: PosRun, wire: WireRecord) -> Verdict:
    """The scenario's verdict: every problem, in French, or none."""
    problems = []
    expected, concluded = scenario.expect, run.conclusion
    if run.stopped_after is not None:
        problems.append(f"la caisse n'a rien conclu en {run.stopped_after:g} s (--pos-timeout "
                        "et la marge) : arrêtée. Une caisse qui attend sans fin bloque la "
                        "vente ; au-delà de son délai, elle doit conclure « issue inconnue »")
    elif concluded == "failure" and run.failure is not None:
        problems.append(f"la caisse n'a pas conclu : {run.failure}")
    elif concluded == "failure":
        problems.append(f"la commande de la caisse est sortie avec le code {run.exit_status}, "
                        "ni 0 (accepté), ni 1 (refusé), ni 3 (inconnu) : elle a sans doute "
                        "planté sur cette réponse" + _last_line(run.output))
    elif concluded != expected:
        problems.append(f"la caisse a conclu « {WORDS[concluded]} » au lieu de "
                        f"« {WORDS[expected]} » : {CONSEQUENCES[expected, concluded]}")
    problems.extend(_wire_problems(wire))
    return Verdict(scenario, run, wire, tuple(problems))


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return f" ({lines[-1][:200]})" if lines else ""


def _wire_problems(wire: WireRecord) -> list[str]:
    problems = []
    if not wire.requests and not wire.malformed:
        problems.append("aucune demande n'est arrivée au terminal")
    sent = len(wire.requests) + len(wire.malformed)
    if sent > 1:
        problems.append(f"la caisse a envoyé {sent} demandes pour une seule vente : une "
                        "caisse ne renvoie jamais un paiement d'elle-même (le premier a pu "
                        "être fait ; le client paierait deux fois)")
    for reason in wire.malformed:
        problems.append(f"demande mal formée ({reason}) : le terminal répond AF=09")
    if wire.open_connections:
        problems.append(f"{wire.open_connections} connexion(s) encore ouverte(s) après la "
                        "conclusion : la caisse doit fermer sa connexion")
    return problems


__all__ = ["PosRun", "Verdict", "WireRecord", "judge"]
