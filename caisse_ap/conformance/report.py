"""The conformance kit's reports: a self-contained HTML page a person reads, and JUnit
XML for continuous integration. Pure: verdicts in, text out.

The page is in the language of the messages (caisse_ap.i18n): French under a
French locale, English otherwise, scenario texts included. The JUnit XML has
the same structure in every language (one test case per scenario, named by
the scenario's name); only the failure's words follow the locale."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from xml.etree import ElementTree

from ..i18n import _, language
from .judge import Verdict, word

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


def _h(text: object) -> str:
    return html.escape(str(text))


def _frame(data: bytes) -> str:
    return data.decode("latin-1").replace("\r", "\\r").replace("\n", "\\n")


def _labels() -> dict[str, str]:
    """The page's fixed words in the user's language, escaped (gettext's extraction does
    not look inside f-strings: they are looked up here)."""
    return {key: _h(text) for key, text in {
        "passed": _("passed"), "failed": _("failed"), "scenario": _("Scenario"),
        "expected": _("Expected"), "concluded": _("Concluded by the POS"),
        "result": _("Result"), "wire": _("On the wire"), "requests": _("Request(s) received"),
        "written": _("Written by the terminal"), "why": _("Why it matters"),
        "source": _("Source"), "fix": _("How POS code gets it right"),
        "output": _("Output of the POS"), "heading": _("Caisse-AP over IP conformance report"),
        "none": _("none"), "nothing": _("nothing")}.items()}


def html_report(verdicts: Sequence[Verdict], pos: str, pos_timeout: float,
                when: datetime | None = None) -> str:
    """One page, no outside resources: the summary, then each scenario."""
    words = _labels()
    passed = sum(v.passed for v in verdicts)
    when = when or datetime.now()
    failed_cell = f'<strong class="ko">{words["failed"]}</strong>'
    rows = "".join(
        f'<tr><td><a href="#{_h(v.scenario.name)}">{_h(v.scenario.text("title"))}</a></td>'
        f"<td>{_h(word(v.scenario.expect))}</td><td>{_h(word(v.concluded))}</td>"
        f"<td>{words['passed'] if v.passed else failed_cell}</td></tr>"
        for v in verdicts)
    sections = "".join(_section(v, words) for v in verdicts)
    counts = {"passed": passed, "count": len(verdicts)}
    score = _h(_("%(passed)d / %(count)d scenarios passed") % counts)
    failures = _h(_("%d failure(s)") % (len(verdicts) - passed))
    result = (f'<span class="ok">{score}</span>' if passed == len(verdicts) else
              f'<span class="ko">{failures}</span>, {score}')
    title = _h(_("Caisse-AP conformance: %(passed)d/%(count)d") % counts)
    # The POS command goes in a <code> of its own: a mark stands for it in the sentence.
    tested = _h(_("POS tested: %(pos)s; POS time-out (--pos-timeout): %(timeout)g s; "
                  "%(date)s.") % {"pos": "\x00", "timeout": pos_timeout,
                                  "date": when.strftime(_("%Y-%m-%d %H:%M"))})
    tested = tested.replace("\x00", f"<code>{_h(pos)}</code>")
    return f"""<!DOCTYPE html>
<html lang="{language()}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><style>{_STYLE}</style></head>
<body><h1>{words["heading"]}</h1>
<p>{tested}</p>
<p class="summary">{result}</p>
<table class="index"><thead><tr><th>{words["scenario"]}</th><th>{words["expected"]}</th>
<th>{words["concluded"]}</th><th>{words["result"]}</th></tr></thead>
<tbody>{rows}</tbody></table>
{sections}
</body></html>
"""


def _section(v: Verdict, words: dict[str, str]) -> str:
    s, wire = v.scenario, v.wire
    problems = "".join(f"<li>{_h(p)}</li>" for p in v.problems)
    requests = "".join(f"<pre>{_h(_frame(r))}</pre>" for r in wire.requests) or words["none"]
    sent = f"<pre>{_h(_frame(wire.sent))}</pre>" if wire.sent else words["nothing"]
    output = (f"<dt>{words['output']}</dt><dd><pre>{_h(v.run.output)}</pre></dd>"
              if v.run.output.strip() and not v.passed else "")
    status = (_("stopped by the kit") if v.run.exit_status is None
              else _("status %s") % v.run.exit_status)
    closed = (_("closed by the POS") if wire.closed_by_pos and not wire.open_connections
              else _("closed by the terminal") if not wire.open_connections
              else _("left open"))
    on_the_wire = (_("%(requests)d request(s), %(malformed)d malformed, %(connections)d "
                     "connection(s), %(closed)s")
                   % {"requests": len(wire.requests), "malformed": len(wire.malformed),
                      "connections": wire.connections, "closed": closed})
    concluded = (_("%(word)s (%(status)s, in %(seconds).1f s)")
                 % {"word": word(v.concluded), "status": status, "seconds": v.run.elapsed})
    expected = (_("%s; one well-formed request, no resend, the POS closes its connection")
                % word(s.expect))
    badge = words["passed"] if v.passed else words["failed"]
    return f"""<section id="{_h(s.name)}" class="{'passed' if v.passed else 'failed'}">
<h2><span class="badge">{badge}</span>{_h(s.text("title"))}
<code>{_h(s.name)}</code></h2>
<p>{_h(s.text("description"))}</p>
{f'<ul class="problems">{problems}</ul>' if problems else ''}
<dl><dt>{words["expected"]}</dt><dd>{_h(expected)}</dd>
<dt>{words["concluded"]}</dt><dd>{_h(concluded)}</dd>
<dt>{words["wire"]}</dt><dd>{_h(on_the_wire)}</dd>
<dt>{words["requests"]}</dt><dd>{requests}</dd>
<dt>{words["written"]}</dt><dd>{sent}</dd>
<dt>{words["why"]}</dt><dd>{_h(s.text("fact"))}</dd>
<dt>{words["source"]}</dt><dd>{_h(s.source)}</dd>
<dt>{words["fix"]}</dt><dd>{_h(s.text("fix"))}</dd>{output}</dl>
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
            failure.text = "\n".join([*v.problems, "", v.scenario.text("fact"),
                                      v.scenario.text("fix")])
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


__all__ = ["html_report", "junit_report"]
