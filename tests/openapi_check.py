"""Every answer the API tests get, checked against docs/openapi.json (the document the
server serves at /api/openapi.json; tests/test_openapi.py checks they are the same).

Validation with jsonschema (Draft 2020-12: the dialect of OpenAPI 3.1's schemas) and
`referencing` for the document's $refs; openapi-spec-validator checks the document
itself (test_openapi.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
DOCUMENT = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
BASE = "urn:caisse-ap-ip:openapi"
REGISTRY = Registry().with_resource(BASE, Resource.from_contents(
    DOCUMENT, default_specification=DRAFT202012))
# Templates with fewer parameters first: /api/terminals/openapi... never shadows a route.
TEMPLATES = sorted(
    ((re.compile("^" + re.sub(r"\{[^}/]+\}", "[^/]+", path) + "$"), path)
     for path in DOCUMENT["paths"]), key=lambda item: item[1].count("{"))
ERROR = {"$ref": f"{BASE}#/components/schemas/Error"}
checked: list[tuple[str, str, int]] = []  # what was checked, for test_openapi.py


def _schema(pointer_schema: dict) -> dict:
    """A schema of the document, its $refs made absolute."""
    text = json.dumps(pointer_schema).replace('"#/components/', f'"{BASE}#/components/')
    return json.loads(text)


def _validate(schema: dict, data: object, where: str) -> None:
    validator = Draft202012Validator(_schema(schema), registry=REGISTRY)
    problems = sorted(validator.iter_errors(data), key=lambda error: list(error.path))
    assert not problems, f"{where}: {problems[0].message} at {list(problems[0].path)}"


def check_response(method: str, url: str, status: int, content_type: str | None,
                   body: object) -> None:
    """Fails (AssertionError) when the answer is not what the document says."""
    path = urlsplit(url).path
    if len(path) > 1:
        path = path.rstrip("/")
    if not path.startswith("/api/") and path != "/metrics":
        return  # the console's files
    where = f"{method} {path} -> {status}"
    checked.append((method, path, status))
    kind = (content_type or "").split(";")[0].strip()
    template = next((template for pattern, template in TEMPLATES if pattern.match(path)), None)
    operation = None
    if template is not None:
        operations = DOCUMENT["paths"][template]
        operation = operations.get("get" if method == "HEAD" else method.lower())
    if operation is None:
        assert status >= 400, f"{where}: the document has no such route"
        if kind == "application/json":
            _validate(ERROR, body, where)
        return
    answers = operation["responses"]
    answer = answers.get(str(status))
    if answer is None:
        assert status >= 400, f"{where}: status not in the document"
        answer = answers["default"]
    if method == "HEAD" or not kind:
        return
    content = answer.get("content", {})
    assert kind in content, f"{where}: {kind} not in the document ({', '.join(content)})"
    if kind == "application/json":
        _validate(content[kind]["schema"], body, where)
