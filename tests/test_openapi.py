"""The OpenAPI 3.1 document: valid, served as docs/openapi.json holds it, and covering
every route, error code and event the server has."""

from __future__ import annotations

import http.client
import json
from dataclasses import replace

import openapi_check
from openapi_spec_validator import validate

from caisse_ap.deviations import KINDS, Deviation
from caisse_ap.terminal import app, profiles
from caisse_ap.terminal.behaviour import TerminalSettings
from caisse_ap.terminal.web import WebOptions, openapi
from caisse_ap.terminal.web.api import ERROR_CODES, TEST_PAYMENT_KEYS, ControlApi
from caisse_ap.terminal.web.farm import ApiRoot


def test_docs_openapi_json_is_the_generated_document():
    # Written by: python -m caisse_ap.terminal.web.openapi > docs/openapi.json
    assert openapi_check.DOCUMENT_PATH.read_text(encoding="utf-8") == openapi.text()


def test_the_document_is_valid_openapi_3_1():
    document = openapi.document()
    validate(document)  # openapi-spec-validator: raises on any mistake
    assert document["openapi"] == "3.1.0"


def test_every_error_code_and_event_is_described():
    document = openapi.document()
    assert document["components"]["schemas"]["Error"]["properties"]["code"]["enum"] == \
        list(ERROR_CODES)
    assert set(document["x-events"]) == {"request", "answer", "settings"}


def test_every_body_key_and_setting_the_api_takes_is_described():
    schemas = openapi.document()["components"]["schemas"]
    assert set(schemas["TestPayment"]["properties"]) == TEST_PAYMENT_KEYS
    assert set(schemas["Settings"]["properties"]) == set(TerminalSettings().to_dict())


def test_every_profile_and_deviation_is_as_described():
    schemas = "#/components/schemas/"
    copy = replace(profiles.builtins()["payxpert"], file="payxpert-shop.toml")
    for profile in (*profiles.builtins().values(), copy):
        openapi_check._validate({"$ref": schemas + "Profile"}, profile.to_json(),
                                profile.key)
    for code in KINDS:
        for deviation in (Deviation(code), Deviation(code, "seen", "vu")):
            openapi_check._validate({"$ref": schemas + "Deviation"}, deviation.to_json(),
                                    code)


def test_every_route_of_the_server_is_described(reactor_thread):
    options = app.TerminalOptions(TerminalSettings(), web=WebOptions("127.0.0.1", 0))
    running = reactor_thread.call(app.start, reactor_thread.reactor, options)
    try:
        api: ControlApi = running.console.api
        routes = {"/api/" + "/".join("{transaction_id}" if part == "*" else part
                                     for part in key): methods
                  for key, methods in api._routes.items()}
        paths = openapi.document()["paths"]
        for path, methods in routes.items():
            documented = {method.upper() for method in paths[path]}
            assert {m.decode() for m in methods} <= documented, path
            farm_path = path.replace("/api/", "/api/terminals/{terminal_id}/", 1)
            if path != "/api/session":
                assert {m.decode() for m in methods} <= {m.upper() for m in paths[farm_path]}
        assert {"/api/terminals", "/api/terminals/{terminal_id}", "/api/openapi.json"} <= \
            set(paths)
        assert isinstance(running.console.web_port.factory.resource.children[b"api"], ApiRoot)
        # Served, and the same document.
        connection = http.client.HTTPConnection("127.0.0.1", running.console.web_address[1],
                                                timeout=10)
        connection.request("GET", "/api/openapi.json")
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read()) == json.loads(openapi.text())
        connection.close()
    finally:
        reactor_thread.call(running.stop)


def test_the_checker_refuses_an_answer_the_document_does_not_allow():
    bad_transaction = {"transactions": [{"id": "one", "status": "approved"}]}
    try:
        openapi_check.check_response("GET", "/api/transactions", 200, "application/json",
                                     bad_transaction)
    except AssertionError as error:
        assert "GET /api/transactions -> 200" in str(error)
    else:
        raise AssertionError("a wrong answer passed")
    try:
        openapi_check.check_response("GET", "/api/nowhere", 200, "application/json", {})
    except AssertionError as error:
        assert "no such route" in str(error)
    else:
        raise AssertionError("an undocumented route passed")
