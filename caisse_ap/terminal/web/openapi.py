"""The OpenAPI 3.1 description of the control API, built from the API's own tables.

One source: the routes, error codes (api.ERROR_CODES), modes, statuses and
outcomes are read from the modules that use them, so that the document
cannot say what the server does not do. The server serves it at
/api/openapi.json; `python -m caisse_ap.terminal.web.openapi` prints it,
which is how docs/openapi.json is written (tests/test_openapi.py checks that
the file matches and that the suite's answers match the document).

Events are not HTTP routes: `GET /api/events` describes the stream, and
the extension `x-events` gives each event's name and the schema of its data.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ... import __version__
from ...deviations import KINDS, POS, TERMINAL
from ...payment import NOT_SENT, Outcome
from ..behaviour import FORWARDED, MODES, OUTCOMES, STATUSES
from ..journal import MAX_LIMIT
from .api import (
    CONFORMANCE_SHOWN,
    ERROR_CODES,
    MAX_ID,
    MAX_TEST_PAYMENTS,
)
from .farm import DEFAULT_MAX_TERMINALS
from .farm_file import LOWEST_PORT, MAX_LABEL

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str) -> Schema:
    return {"type": [kind, "null"]}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = (),
            **more: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **more}
    if required:
        schema["required"] = list(required)
    return schema


FIELD = {"type": "array", "items": {"type": "array", "items": {"type": "string"},
                                    "minItems": 2, "maxItems": 2}}
COUNTERS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
            "required": ["total", "pending", "open_connections"]}


def _schemas() -> dict[str, Schema]:
    settings_properties: dict[str, Schema] = {
        "mode": {"type": "string", "enum": list(MODES)},
        "failure_type": {"type": "string"},
        "duration": {"type": "number", "minimum": 0},
        "payment_type": {"type": "string"},
        "seller_contract": {"type": "string"},
        "answer_version": _nullable("string"),
        "pad_amount": {"type": "boolean"},
        "currencies": {"type": ["array", "null"], "items": {"type": "string"}},
        "amount_rules": {"type": "boolean"},
        "manual_timeout": {"type": "number"},
        "profile": {"type": "string"},
    }
    outcome = _object({"outcome": {"type": "string", "examples": list(OUTCOMES)},
                       "delay": {"type": "number", "minimum": 0},
                       "payment_type": {"type": "string"}}, ("outcome",))
    transaction = _object({
        "id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        "received_at": _nullable("string"), "answered_at": _nullable("string"),
        "duration_s": _nullable("number"), "peer": _nullable("string"),
        "protocol": {"type": "string"}, "action": _nullable("string"),
        "amount": _nullable("string"), "amount_minor": _nullable("integer"),
        "currency": _nullable("string"), "currency_numeric": _nullable("string"),
        "currency_symbol": _nullable("string"),
        "request": FIELD, "request_frame": _nullable("string"),
        "answer": {"oneOf": [FIELD, {"type": "null"}]}, "answer_frame": _nullable("string"),
        "receipt": _nullable("string"),
        "status": {"type": "string", "enum": list(STATUSES)},
        "reason": {"oneOf": [_object({"code": {"type": "string"},
                                      "label": {"type": "string"}}, ("code",)),
                             {"type": "null"}]},
        "decided_by": _nullable("string"),
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "exchange": _nullable("object"),
        "mode": {"type": "string",
                 "enum": ["simulated", "proxied", "replayed", "conformance"]},
        "deviations": {"type": "array", "items": _ref("Deviation"),
                       "description": "what the proxy saw differ from the profile; "
                                      "empty for a simulated answer"},
        "terminal": {"type": ["string", "null"],
                     "description": "the farm terminal's id; null: the command line's"},
        "scenario": {"type": "string",
                     "description": "the conformance kit's scenario that answered "
                                    "(--conformance); absent otherwise"},
        "decision_deadline": {"type": "string",
                              "description": "only while waiting for a manual decision"},
    }, ("id", "status", "request", "answer", "decided_by", "terminal"))
    journal = _object({"state": {"type": "string", "enum": ["ok", "failing"]},
                       "reason": _nullable("string"), "failing_since": _nullable("string"),
                       "path": _nullable("string"), "in_memory_only": {"type": "integer"},
                       "interrupted_at_start": {"type": "integer"}}, ("state",))
    address = {"oneOf": [_object({"host": {"type": "string"}, "port": {"type": "integer"}},
                                 ("host", "port")), {"type": "null"}]}
    upstream = {"oneOf": [
        _object({"mode": {"const": "proxied"}, "host": {"type": "string"},
                 "port": {"type": "integer", "minimum": 1, "maximum": 65535}},
                ("mode", "host", "port"), description="--proxy: the real terminal that answers"),
        _object({"mode": {"const": "replayed"}, "file": _nullable("string"),
                 "in_order": {"type": "boolean"}},
                ("mode", "file", "in_order"), description="--replay: a recording answers"),
        {"type": "null", "description": "this simulator answers"}]}
    error = _object({
        "error": {"type": "string", "description": "an English sentence for people"},
        "code": {"type": "string", "enum": list(ERROR_CODES),
                 "description": "stable, for programs: " + "; ".join(
                     f"`{code}`: {meaning}" for code, meaning in ERROR_CODES.items())},
        "field": _nullable("string"),
        "limits": {"type": "object"},
    }, ("error", "code", "field"), additionalProperties=False)
    farm_terminal = _object({
        "id": {"type": "string", "pattern": "^t[1-9][0-9]*$"},
        "label": {"type": "string", "maxLength": MAX_LABEL},
        "state": {"type": "string", "enum": ["listening", "deleting", "deleted"]},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "console_url": _nullable("string"),
        "settings": _ref("Settings"), "counters": COUNTERS,
    }, ("id", "label", "state", "port", "console_url", "settings", "counters"))
    farm_body = {
        "profile": {"type": "string", "description": "a profile of choices.profiles"},
        "settings": {**_ref("SettingsChange"),
                     "description": "any setting; the profile is applied first"},
        "label": {"type": "string", "maxLength": MAX_LABEL},
    }
    return {
        "Error": error,
        "Settings": _object(settings_properties, tuple(settings_properties)),
        "SettingsChange": _object(settings_properties, additionalProperties=False),
        "Outcome": outcome,
        "Queue": _object({"queue": {"type": "array", "items": outcome}}, ("queue",)),
        "Transaction": transaction,
        "Transactions": _object({"transactions": {"type": "array", "items": _ref("Transaction")}},
                                ("transactions",)),
        "Status": _object({
            "version": {"type": "string"}, "token_required": {"type": "boolean"},
            "journal": journal, "terminal": address, "web": address, "upstream": upstream,
            "settings": _ref("Settings"), "counters": COUNTERS,
            "queue": {"type": "array", "items": outcome}, "choices": _ref("Choices"),
        }, ("token_required", "journal"),
            description="Without the token (when one is set): token_required and "
                        "journal.state only."),
        "AmountRules": _object({"enabled": {"type": "boolean"}, "source": {"type": "string"},
                                "rules": {"type": "array", "items": _object(
                                    {"match": {"type": "object"}, "outcome": outcome,
                                     "description": {"type": "string"}},
                                    ("match", "outcome"))}},
                               ("enabled", "source", "rules")),
        "TestPayment": _object(_test_payment_properties(), ("amount",),
                               additionalProperties=False),
        "PaymentResult": _object({
            "status": {"type": "string", "enum": [*Outcome, NOT_SENT],
                       "description": f"`{NOT_SENT}`: nothing was sent"},
            "amount": {"type": "string"}, "currency": {"type": "string"},
            "currency_symbol": _nullable("string"), "action": {"type": "string"},
            "reason": {"oneOf": [_object({"code": {"type": "string"},
                                          "label": {"type": "string"},
                                          "details": {"type": "string"}}, ("code",)),
                                 {"type": "null"}]},
            "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "receipt": _nullable("string"), "elapsed_s": {"type": "number", "minimum": 0},
            "request": {"type": "string"}, "answer": _nullable("string"),
            "problem": _nullable("string"),
            "dropped_after_answer": {"type": "string", "description": "bytes the terminal "
                                     "wrote after its answer, not part of it"},
        }, ("status", "elapsed_s"), description="the object `caisse-ap-ip-client --json` prints"),
        "Session": _object({"token_required": {"type": "boolean"}}, ("token_required",)),
        "FarmTerminal": farm_terminal,
        "FarmTerminals": _object({"max_terminals": {"type": "integer", "minimum": 0},
                                  "terminals": {"type": "array",
                                                "items": _ref("FarmTerminal")}},
                                 ("max_terminals", "terminals")),
        "NewFarmTerminal": _object({
            **farm_body,
            "port": {"type": "integer", "description": "0 or none: a free port",
                     "oneOf": [{"const": 0},
                               {"minimum": LOWEST_PORT, "maximum": 65535}]},
        }, additionalProperties=False),
        "FarmTerminalChange": _object(farm_body, additionalProperties=False),
        "Deviation": _object({
            "code": {"type": "string", "enum": list(KINDS)},
            "side": {"type": "string", "enum": [POS, TERMINAL],
                     "description": "who deviates from the profile"},
            "label": {"type": "string", "description": "in French"},
            "detail": {"type": "string", "description": "what was seen, in English"},
            "detail_fr": {"type": "string", "description": "the same in French (rows "
                          "written before it existed lack it)"},
        }, ("code", "side", "label", "detail")),
        "Choices": _choices_schema(),
        "Profile": _object({
            "name": {"type": "string"}, "label": {"type": "string"},
            "source": {"type": "string", "description": "the public source it follows"},
            "source_fr": {"type": "string", "description": "the same in French"},
            "file": {"type": ["string", "null"],
                     "description": "the file it was read from; null: built in"},
            "silent": {"type": "array", "items": {"type": "string"}},
            "differences": {"type": "array", "items": _object(
                {"point": {"type": "string"}, "standard": {"type": "string"},
                 "profile": {"type": "string"}}, ("point", "standard", "profile"))},
        }, ("name", "label", "source", "source_fr", "file", "silent", "differences")),
        **_conformance_schemas(),
    }


def _test_payment_properties() -> dict[str, Schema]:
    """The body of POST /api/test-payment: every key of api.TEST_PAYMENT_KEYS
    (tests/test_openapi.py checks they are the same)."""
    properties: dict[str, Schema] = {
        "amount": {"type": ["string", "number"]}, "currency": {"type": "string"},
        "action": {"type": "string"}, "cheque": {"type": "boolean"},
        "host": _nullable("string"),
        "port": {"type": ["integer", "null"], "minimum": 1, "maximum": 65535},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
        "partial": {"type": "boolean"}, "immediate": {"type": "boolean"},
        "receipt": {"type": "boolean"}, "reference": {"type": "string"},
        "confirm_real_payment": {
            "type": "string", "description": "behind --proxy, a payment to the real terminal "
            "(or to this server) is a real one: name that terminal as HOST:PORT to confirm "
            "(else 400 `confirmation_required`)"},
    }
    return properties


def _choices_schema() -> Schema:
    names = {"type": "array", "items": {"type": "string"}}
    return _object({
        "modes": {"type": "array", "items": {"type": "string", "enum": list(MODES)}},
        "failure_types": {"type": "array", "items": _object(
            {"name": {"type": "string"}, "code": {"type": "string"},
             "label": {"type": "string"}}, ("name", "code", "label"))},
        "payment_types": {"type": "array", "items": _object(
            {"name": {"type": "string"}, "code": {"type": "string"},
             "label": {"type": "string"}, "scheme": {"type": "string"},
             "read_mode": {"type": "string"}, "read_mode_label": {"type": "string"}},
            ("name", "code", "label"))},
        "outcomes": {"type": "array", "items": {"type": "string", "enum": list(OUTCOMES)}},
        "forwarded_outcomes": {"type": "array",
                               "items": {"type": "string", "enum": list(FORWARDED)},
                               "description": "only behind --proxy or --replay"},
        "actions": names,
        "statuses": {"type": "array", "items": {"type": "string", "enum": list(STATUSES)}},
        "profiles": {"type": "array", "items": _ref("Profile")},
    }, ("modes", "failure_types", "payment_types", "outcomes", "forwarded_outcomes",
        "actions", "statuses", "profiles"))


def _conformance_schemas() -> dict[str, Schema]:
    """The session of `caisse-ap-ip-server --conformance` (conformance/manual.py)."""
    count = {"type": "integer", "minimum": 0}
    scenario = _object({
        "name": {"type": "string"}, "title": {"type": "string"},
        "description": {"type": "string"}, "amount": {"type": "string"},
        "paid": {"type": "boolean", "description": "a payment reached the terminal"},
        "played": {"type": "boolean", "description": "played: the tester may answer"},
        "requests": count, "malformed": count, "connections": count,
    }, ("name", "title", "amount", "paid", "played"))
    verdict = _object({
        "name": {"type": "string"}, "title": {"type": "string"},
        "passed": {"type": "boolean"}, "expected": {"type": "string"},
        "concluded": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "string"}},
        "fact": {"type": "string"}, "fix": {"type": "string"}, "requests": count,
    }, ("name", "title", "passed", "expected", "concluded", "problems"))
    return {
        "ConformanceState": _object({
            "index": count, "total": count, "finished": {"type": "boolean"},
            "current": {"oneOf": [scenario, {"type": "null"}],
                        "description": "the scenario to play (its expected conclusion is "
                                       "not given); null once finished"},
            "answers": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "the console's keys and what each one means"},
            "verdicts": {"type": "array", "items": _ref("ConformanceVerdict")},
            "report": {"type": ["string", "null"],
                       "description": "the HTML report's path once written"},
        }, ("index", "total", "finished", "current", "verdicts", "report")),
        "ConformanceVerdict": verdict,
        "ConformanceAnswer": _object({
            "shown": {"type": "string", "enum": list(CONFORMANCE_SHOWN),
                      "description": "what the POS showed for the scenario just played"},
        }, ("shown",)),
    }


def _json(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    described = {400: "a bad value: `field` names it, `limits` gives its bounds",
                 401: "the token is missing or wrong", 403: "a cross-origin write",
                 404: "no such thing", 405: "not this method", 409: "a conflict (see code)",
                 413: "body too large", 415: "the body is not application/json",
                 421: "a Host the server does not answer to",
                 429: "too many at once"}
    answers = {str(status): _json(_ref("Error"), described[status]) for status in statuses}
    answers["default"] = _json(_ref("Error"), "any other error (`code` says which)")
    return answers


BODY_ERRORS = (400, 401, 403, 413, 415)


def _body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


TERMINAL_ID = {"name": "terminal_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^t[1-9][0-9]*$"},
               "description": "a farm terminal's id (POST /api/terminals)"}
TRANSACTION_ID = {"name": "transaction_id", "in": "path", "required": True,
                  "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}


def _terminal_routes() -> dict[str, dict[str, Schema]]:
    """The routes of one terminal, as under /api/ and under /api/terminals/{id}/."""
    transactions_query = [
        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
               "how many, newest first"),
        _query("after", {"type": "integer", "minimum": 0, "maximum": MAX_ID},
               "only ids greater than this"),
        _query("before", {"type": "integer", "minimum": 1, "maximum": MAX_ID},
               "only ids smaller than this (the next page of an export)"),
        _query("status", {"type": "string", "enum": list(STATUSES)}, "only this status"),
    ]
    outcomes = {"oneOf": [_ref("Outcome"), {"type": "array", "items": _ref("Outcome"),
                                            "minItems": 1}]}
    return {
        "/status": {"get": {"summary": "The terminal's state, counters and choices",
                            "security": [{}, {"bearer": []}],
                            "responses": {"200": _json(_ref("Status")), **_errors()}}},
        "/settings": {
            "get": {"summary": "The settings", "responses": {"200": _json(_ref("Settings")),
                                                             **_errors(401)}},
            "put": {"summary": "Change some settings (all or nothing)",
                    "requestBody": _body(_ref("SettingsChange")),
                    "responses": {"200": _json(_ref("Settings")), **_errors(*BODY_ERRORS)}}},
        "/next": {
            "get": {"summary": "The outcome queue",
                    "responses": {"200": _json(_ref("Queue")), **_errors(401)}},
            "post": {"summary": "Queue outcomes for the next transactions (all or nothing)",
                     "requestBody": _body(outcomes),
                     "responses": {"201": _json(_ref("Queue"), "queued"),
                                   **_errors(*BODY_ERRORS, 409)}},
            "delete": {"summary": "Empty the queue",
                       "responses": {"200": _json(_ref("Queue")), **_errors(401, 403)}}},
        "/transactions": {"get": {
            "summary": "The journal, newest first", "parameters": transactions_query,
            "responses": {"200": _json(_ref("Transactions")), **_errors(400, 401)}}},
        "/transactions/{transaction_id}": {"get": {
            "summary": "One transaction", "parameters": [TRANSACTION_ID],
            "responses": {"200": _json(_ref("Transaction")), **_errors(401, 404)}}},
        "/transactions/{transaction_id}/decision": {"post": {
            "summary": "Manual mode: decide a waiting transaction; answers once answered",
            "parameters": [TRANSACTION_ID], "requestBody": _body(_ref("Outcome")),
            "responses": {"200": _json(_ref("Transaction")),
                          **_errors(*BODY_ERRORS, 404, 409)}}},
        "/amount-rules": {"get": {
            "summary": "The amount rules in use",
            "responses": {"200": _json(_ref("AmountRules")), **_errors(401)}}},
        "/test-payment": {"post": {
            "summary": f"Pay this terminal (or another) as a POS would; {MAX_TEST_PAYMENTS} "
                       "at once at most",
            "requestBody": _body(_ref("TestPayment")),
            "responses": {"200": _json(_ref("PaymentResult"),
                                       "the payment's result, whatever its outcome"),
                          **_errors(*BODY_ERRORS, 409, 429)}}},
        "/events": {"get": {
            "summary": "Server-Sent Events: request, answer, settings (see x-events)",
            "responses": {"200": {"description": "text/event-stream; `id:`, `event:`, one "
                                                 "`data:` line of JSON",
                                  "content": {"text/event-stream": {
                                      "schema": {"type": "string"}}}},
                          **_errors(401)}}},
        "/log": {"get": {
            "summary": "The raw log of a time range, as a file",
            "parameters": [_query("since", {"type": "string", "format": "date-time"},
                                  "ISO 8601; UTC without an offset"),
                           _query("until", {"type": "string", "format": "date-time"},
                                  "ISO 8601; UTC without an offset")],
            "responses": {"200": {"description": "log lines",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 404)}}},
        "/conformance": {"get": {
            "summary": "The conformance session (caisse-ap-ip-server --conformance; 404 "
                       "without it, and always for a farm terminal)",
            "responses": {"200": _json(_ref("ConformanceState")), **_errors(401, 404)}}},
        "/conformance/answer": {"post": {
            "summary": "What the POS showed for the scenario just played: its verdict, once "
                       "the POS closed its connection; then the next scenario",
            "requestBody": _body(_ref("ConformanceAnswer")),
            "responses": {"200": _json(_ref("ConformanceVerdict")),
                          **_errors(*BODY_ERRORS, 404, 409)}}},
    }


def _farm_routes() -> dict[str, dict[str, Schema]]:
    one = [TERMINAL_ID]
    return {
        "/api/terminals": {
            "get": {"summary": "Every terminal of the farm, deleted ones still kept included",
                    "responses": {"200": _json(_ref("FarmTerminals")), **_errors(401)}},
            "post": {"summary": "Create a terminal; it listens at once (at most "
                                f"--max-terminals, default {DEFAULT_MAX_TERMINALS})",
                     "requestBody": _body(_ref("NewFarmTerminal")),
                     "responses": {"201": _json(_ref("FarmTerminal"), "created, listening"),
                                   **_errors(*BODY_ERRORS, 409)}}},
        "/api/terminals/{terminal_id}": {
            "get": {"summary": "One farm terminal", "parameters": one,
                    "responses": {"200": _json(_ref("FarmTerminal")), **_errors(401, 404)}},
            "patch": {"summary": "Change its label or settings (all or nothing)",
                      "parameters": one, "requestBody": _body(_ref("FarmTerminalChange")),
                      "responses": {"200": _json(_ref("FarmTerminal")),
                                    **_errors(*BODY_ERRORS, 404, 409)}},
            "delete": {"summary": "Stop it: it accepts nothing more at once, answers what is in "
                                  "flight as it would have, then is released; its rows stay in "
                                  "the journal",
                       "parameters": one,
                       "responses": {"200": _json(_ref("FarmTerminal"),
                                                  "released (state deleted): nothing was "
                                                  "in flight, or it is over"),
                                     "202": _json(_ref("FarmTerminal"),
                                                  "accepted (state deleting): it still answers "
                                                  "counters.pending transactions, then is "
                                                  "released; GET it to follow"),
                                     **_errors(401, 403, 404)}}},
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the control API."""
    paths: dict[str, dict[str, Schema]] = {}
    for path, operations in _terminal_routes().items():
        paths["/api" + path] = operations
    paths["/api/transactions"]["get"]["parameters"] = [
        *paths["/api/transactions"]["get"]["parameters"],
        _query("terminal", {"type": "string", "pattern": "^(main|t[1-9][0-9]*)$"},
               "one terminal's rows of the journal (main: the command line's terminal); "
               "without it, every terminal's, each naming its own")]
    paths.update(_farm_routes())
    for path, operations in _terminal_routes().items():
        paths["/api/terminals/{terminal_id}" + path] = {
            method: {**operation, "parameters": [TERMINAL_ID, *operation.get("parameters", [])],
                     "summary": operation["summary"] + " (a farm terminal)"}
            for method, operation in operations.items()}
    paths["/api/session"] = {
        method: {"summary": summary, "responses": {"200": _json(_ref("Session")),
                                                   **_errors(401, 403)}}
        for method, summary in (("post", "Trade the token for the event stream's cookie"),
                                ("delete", "Remove that cookie"))}
    paths["/metrics"] = {"get": {
        "summary": "Prometheus text format: caisse_ap_transactions_total{terminal,outcome}, "
                   "caisse_ap_answer_seconds (histogram), caisse_ap_connections_open, "
                   "caisse_ap_journal_failing, caisse_ap_journal_rows_waiting; the command "
                   "line's terminal is terminal=\"main\"",
        "responses": {"200": {"description": "Prometheus's text format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                      **_errors(401)}}}
    paths["/api/openapi.json"] = {"get": {
        "summary": "This document", "security": [{}],
        "responses": {"200": {"description": "OpenAPI 3.1",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "caisse-ap-ip control API", "version": __version__,
                 "license": {"name": "GPL-3.0-or-later",
                             "identifier": "GPL-3.0-or-later"},
                 "description": "The JSON API of the simulated Caisse-AP terminal and of its "
                                "farm (docs/api.md)."},
        "paths": paths,
        "components": {"schemas": _schemas(),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "--web-token"}}},
        "security": [{"bearer": []}],
        "x-events": {
            "request": {"description": "a request was read (status pending)",
                        "data": _ref("Transaction")},
            "answer": {"description": "the transaction in its final state",
                       "data": _ref("Transaction")},
            "settings": {"description": "the settings after a change",
                         "data": _ref("Settings")},
        },
    }


def text() -> str:
    """The document as docs/openapi.json holds it."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(text())
