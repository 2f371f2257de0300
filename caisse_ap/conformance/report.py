"""The conformance kit's reports: a self-contained HTML page a person reads, and JUnit
XML for continuous integration. Pure: verdicts in, text out."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from xml.etree import ElementTree

from .judge import WORDS, Verdict

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:62rem;padding:0 1rem;
color:#1d2430;background:#fafbfc}
h1{font-size:1.6rem;margin-bottom:.2rem}
.summary{font-size:1.1rem;margin:.5rem 0 1.5rem}
.ok{color:#1a7f37;font-weight:600}.ko{color:#b42318;font-weight:600}
table.index{border-collapse:collapse;width:100%;margin-bottom:2rem}
table.index td,table.index th{border-bottom:1px solid #d8dee4;padding:.35rem .5rem;
text-align:left}
section{background:#fff;border:1px solid #d8dee4;border-left:6px solid #1a7f37;
border-radius:6px;padding:.8rem 1.2rem;margin:1rem 0}
section.failed{border-left-color:#b42318}
section h2{font-size:1.15rem;margin:.2rem 0 .6rem}
.badge{display:inline-block;border-radius:4px;padding:0 .45rem;font-size:.85rem;
font-weight:600;color:#fff;background:#1a7f37;margin-right:.4rem}
.failed .badge{background:#b42318}
dl{display:grid;grid-template-columns:11rem 1fr;gap:.25rem .8rem;margin:.4rem 0}
dt{color:#57606a}dd{margin:0}
ul.problems{color:#b42318;margin:.4rem 0;padding-left:1.2rem}
code,pre{font:13px/1.4 ui-monospace,monospace;background:#f0f2f4;border-radius:4px}
pre{padding:.5rem;white-space:pre-wrap;word-break:break-all;max-height:12rem;overflow:auto}
"""


_FAILED_CELL = '<strong class="ko">échoué</strong>'


def _h(text: object) -> str:
    return html.escape(str(text))


def _frame(data: bytes) -> str:
    return data.decode("latin-1").replace("\r", "\\r").replace("\n", "\\n")


def html_report(verdicts: Sequence[Verdict], pos: str, pos_timeout: float,
                when: datetime | None = None) -> str:
    """One page, no outside resources: the summary, then each scenario."""
    passed = sum(v.passed for v in verdicts)
    when = when or datetime.now()
    rows = "".join(
        f'<tr><td><a href="#{_h(v.scenario.name)}">{_h(v.scenario.title)}</a></td>'
        f"<td>{_h(WORDS[v.scenario.expect])}</td><td>{_h(WORDS[v.concluded])}</td>"
        f"<td>{'réussi' if v.passed else _FAILED_CELL}</td></tr>"
        for v in verdicts)
    sections = "".join(_section(v) for v in verdicts)
    result = (f'<span class="ok">{passed} / {len(verdicts)} scénarios réussis</span>'
              if passed == len(verdicts) else
              f'<span class="ko">{len(verdicts) - passed} échec(s)</span>, '
              f"{passed} / {len(verdicts)} scénarios réussis")
    return f"""<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Conformité Caisse-AP : {passed}/{len(verdicts)}</title><style>{_STYLE}</style></head>
<body><h1>Rapport de conformité Caisse-AP sur IP</h1>
<p>Caisse testée : <code>{_h(pos)}</code> ; délai de la caisse (--pos-timeout) :
{pos_timeout:g} s ; {_h(when.strftime("%d/%m/%Y %H:%M"))}.</p>
<p class="summary">{result}</p>
<table class="index"><thead><tr><th>Scénario</th><th>Attendu</th><th>Conclu par la caisse</th>
<th>Résultat</th></tr></thead><tbody>{rows}</tbody></table>
{sections}
</body></html>
"""


def _section(v: Verdict) -> str:
    s, wire = v.scenario, v.wire
    problems = "".join(f"<li>{_h(p)}</li>" for p in v.problems)
    requests = "".join(f"<pre>{_h(_frame(r))}</pre>" for r in wire.requests) or "aucune"
    sent = f"<pre>{_h(_frame(wire.sent))}</pre>" if wire.sent else "rien"
    output = f"<dt>Sortie de la caisse</dt><dd><pre>{_h(v.run.output)}</pre></dd>" \
        if v.run.output.strip() and not v.passed else ""
    status = "arrêtée par le kit" if v.run.exit_status is None else f"code {v.run.exit_status}"
    closed = ("fermée par la caisse" if wire.closed_by_pos and not wire.open_connections
              else "fermée par le terminal" if not wire.open_connections else "restée ouverte")
    return f"""<section id="{_h(s.name)}" class="{'passed' if v.passed else 'failed'}">
<h2><span class="badge">{'réussi' if v.passed else 'échoué'}</span>{_h(s.title)}
<code>{_h(s.name)}</code></h2>
<p>{_h(s.description)}</p>
{f'<ul class="problems">{problems}</ul>' if problems else ''}
<dl><dt>Attendu</dt><dd>{_h(WORDS[s.expect])} ; une seule demande bien formée, pas de
renvoi, la caisse ferme sa connexion</dd>
<dt>Conclu par la caisse</dt><dd>{_h(WORDS[v.concluded])} ({_h(status)}, en
{v.run.elapsed:.1f} s)</dd>
<dt>Sur le réseau</dt><dd>{len(wire.requests)} demande(s), {len(wire.malformed)} mal
formée(s), {wire.connections} connexion(s), {closed}</dd>
<dt>Demande(s) reçue(s)</dt><dd>{requests}</dd>
<dt>Écrit par le terminal</dt><dd>{sent}</dd>
<dt>Pourquoi c'est important</dt><dd>{_h(s.fact)}</dd>
<dt>Source</dt><dd>{_h(s.source)}</dd>
<dt>Comment le code de caisse s'y prend</dt><dd>{_h(s.fix)}</dd>{output}</dl>
</section>
"""


def junit_report(verdicts: Sequence[Verdict], suite: str = "caisse-ap-conformance") -> str:
    """JUnit XML: one test case per scenario, a failure holding its problems."""
    failures = sum(not v.passed for v in verdicts)
    root = ElementTree.Element("testsuite", name=suite, tests=str(len(verdicts)),
                               failures=str(failures), errors="0",
                               time=f"{sum(v.run.elapsed for v in verdicts):.3f}")
    for v in verdicts:
        case = ElementTree.SubElement(root, "testcase", classname=suite, name=v.scenario.name,
                                      time=f"{v.run.elapsed:.3f}")
        if not v.passed:
            failure = ElementTree.SubElement(case, "failure", message=v.problems[0])
            failure.text = "\n".join([*v.problems, "", v.scenario.fact, v.scenario.fix])
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


__all__ = ["html_report", "junit_report"]
