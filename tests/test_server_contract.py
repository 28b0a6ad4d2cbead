"""The server's own OpenAPI document against the shared contract
(tests/contract/boxlite-box.openapi.yaml, BoxLite's, Apache-2.0): for every
route we serve, the contract has it (path without ``{prefix}``, method,
operationId), every contract parameter is ours with its place and type,
and request and response bodies have the contract's fields and types.
Our extension fields (``boxlite_*``) aside, nothing may differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from boxlite_ffi.boxapi import EXTENSION
from boxlite_ffi.server.app import create_app
from boxlite_ffi.server.settings import Settings

CONTRACT = Path(__file__).parent / "contract" / "boxlite-box.openapi.yaml"
METHODS = ("get", "put", "post", "delete", "head", "patch")
Schema = dict[str, Any]


@pytest.fixture(scope="module")
def contract() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONTRACT.read_text())
    return loaded


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("openapi")
    return create_app(Settings(home=home, token="unused")).openapi()


def contract_path(path: str) -> str:
    """Ours for a contract path: under /v1, without the routing slot."""
    return "/v1" + path.replace("/{prefix}", "")


def resolve(doc: dict[str, Any], schema: Schema) -> Schema:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


def kinds(doc: dict[str, Any], schema: Schema) -> tuple[set[str], bool]:
    """The JSON types a schema allows (a $ref counts as object), and
    whether it allows null."""
    schema = resolve(doc, schema)
    options = schema.get("anyOf") or schema.get("oneOf") or [schema]
    found: set[str] = set()
    nullable = bool(schema.get("nullable"))
    for option in options:
        option = resolve(doc, option)
        kind = option.get("type")
        if kind == "null":
            nullable = True
        elif kind is None and ("properties" in option or "additionalProperties" in option):
            found.add("object")
        elif isinstance(kind, list):
            found |= set(kind) - {"null"}
            nullable |= "null" in kind
        elif kind is not None:
            found.add(kind)
        elif "enum" in option:
            found.add("string")
    return found, nullable


def non_null(doc: dict[str, Any], schema: Schema) -> Schema:
    schema = resolve(doc, schema)
    for option in schema.get("anyOf") or ():
        if resolve(doc, option).get("type") != "null":
            return resolve(doc, option)
    return schema


def compare(
    theirs_doc: dict[str, Any],
    theirs: Schema,
    ours_doc: dict[str, Any],
    mine: Schema,
    where: str,
    response: bool,
    depth: int = 0,
) -> list[str]:
    """Every difference between a contract schema and ours."""
    problems: list[str] = []
    their_kinds, their_null = kinds(theirs_doc, theirs)
    my_kinds, my_null = kinds(ours_doc, mine)
    if their_kinds and my_kinds != their_kinds:
        problems.append(f"{where}: type {sorted(my_kinds)}, contract {sorted(their_kinds)}")
    if response and their_null and not my_null:
        problems.append(f"{where}: the contract allows null")
    t, m = resolve(theirs_doc, theirs), non_null(ours_doc, mine)
    if "enum" in t and "enum" in m and not set(m["enum"]) <= set(t["enum"]):
        problems.append(f"{where}: enum {m['enum']} beyond the contract's {t['enum']}")
    if depth > 6:
        return problems
    if "items" in t and "items" in m:
        problems += compare(
            theirs_doc, t["items"], ours_doc, m["items"], where + "[]", response, depth + 1
        )
    their_props, my_props = t.get("properties") or {}, m.get("properties") or {}
    for name, prop in their_props.items():
        if name not in my_props:
            problems.append(f"{where}.{name}: missing")
            continue
        problems += compare(
            theirs_doc, prop, ours_doc, my_props[name], f"{where}.{name}", response, depth + 1
        )
    for name in my_props:
        if name not in their_props and their_props and not name.startswith(EXTENSION):
            problems.append(f"{where}.{name}: not in the contract, not an extension")
    their_required, my_required = set(t.get("required", ())), set(m.get("required", ()))
    if response and not their_required <= my_required:
        problems.append(f"{where}: may omit {sorted(their_required - my_required)}")
    if not response and not my_required <= their_required:
        problems.append(f"{where}: requires {sorted(my_required - their_required)} beyond it")
    closed = t.get("additionalProperties") is False
    if not response and closed and m.get("additionalProperties") is not False:
        problems.append(f"{where}: the contract refuses unknown fields")
    return problems


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of ``doc`` but our extension routes (a ``boxlite_*``
    segment: a contract client never asks for them)."""
    return [
        (path, method, item[method])
        for path, item in doc["paths"].items()
        for method in METHODS
        if method in item and not any(s.startswith(EXTENSION) for s in path.split("/"))
    ]


def contract_operation(
    contract: dict[str, Any], path: str, method: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    for their_path, item in contract["paths"].items():
        if contract_path(their_path) == path and method in item:
            params = [*item.get("parameters", ()), *item[method].get("parameters", ())]
            return item[method], params
    return None


def test_every_route_we_serve_is_the_contracts(
    contract: dict[str, Any], ours: dict[str, Any]
) -> None:
    served = operations(ours)
    assert len(served) >= 17
    for path, method, op in served:
        found = contract_operation(contract, path, method)
        assert found is not None, f"{method.upper()} {path} is not in the contract"
        assert op["operationId"] == found[0]["operationId"], (path, method)


def test_parameters(contract: dict[str, Any], ours: dict[str, Any]) -> None:
    problems = []
    for path, method, op in operations(ours):
        found = contract_operation(contract, path, method)
        assert found is not None
        mine = {(p["name"], p["in"]): p for p in op.get("parameters", ())}
        for param in found[1]:
            param = resolve_param(contract, param) if "$ref" in param else param
            if param["name"] == "prefix":
                continue
            key = (param["name"], param["in"])
            where = f"{method.upper()} {path} {param['in']} {param['name']}"
            if key not in mine:
                problems.append(f"{where}: missing")
                continue
            if param.get("required") and not mine[key].get("required"):
                problems.append(f"{where}: the contract requires it")
            problems += compare(contract, param["schema"], ours, mine[key]["schema"], where, False)
    assert not problems, "\n".join(problems)


def resolve_param(contract: dict[str, Any], param: dict[str, Any]) -> dict[str, Any]:
    name = param["$ref"].rsplit("/", 1)[1]
    resolved: dict[str, Any] = contract["components"]["parameters"][name]
    return resolved


def json_schema(body: dict[str, Any] | None) -> Schema | None:
    content = (body or {}).get("content") or {}
    found = content.get("application/json", {}).get("schema")
    return found if isinstance(found, dict) else None


def test_bodies(contract: dict[str, Any], ours: dict[str, Any]) -> None:
    problems = []
    for path, method, op in operations(ours):
        found = contract_operation(contract, path, method)
        assert found is not None
        theirs, where = found[0], f"{method.upper()} {path}"
        their_request = json_schema(theirs.get("requestBody"))
        if their_request is not None:
            my_request = json_schema(op.get("requestBody"))
            if my_request is None:
                problems.append(f"{where}: no JSON request body")
            else:
                problems += compare(contract, their_request, ours, my_request, where, False)
        for status, reply in theirs["responses"].items():
            if not status.startswith("2"):
                continue
            if status not in op["responses"]:
                problems.append(f"{where}: no {status} response (ours: {sorted(op['responses'])})")
                continue
            their_reply = json_schema(reply)
            if their_reply is not None:
                my_reply = json_schema(op["responses"][status])
                if my_reply is None:
                    problems.append(f"{where} {status}: no JSON body")
                else:
                    problems += compare(contract, their_reply, ours, my_reply, where, True)
    assert not problems, "\n".join(problems)


def test_error_model(contract: dict[str, Any], ours: dict[str, Any]) -> None:
    theirs = {"$ref": "#/components/schemas/ErrorResponse"}
    assert "ErrorResponse" in ours["components"]["schemas"]
    mine = {"$ref": "#/components/schemas/ErrorResponse"}
    assert not compare(contract, theirs, ours, mine, "ErrorResponse", True)


def test_the_comparison_can_fail(contract: dict[str, Any], ours: dict[str, Any]) -> None:
    box = ours["components"]["schemas"]["Box"]
    broken = {**box, "properties": dict(box["properties"]), "required": list(box["required"])}
    del broken["properties"]["image"]
    broken["properties"]["cpus"] = {"type": "string"}
    broken["properties"]["extra"] = {"type": "string"}
    broken["required"].remove("status")
    theirs = {"$ref": "#/components/schemas/Box"}
    problems = compare(contract, theirs, ours, broken, "Box", True)
    assert len(problems) == 4, problems
    assert not compare(contract, theirs, ours, box, "Box", True)
    assert not any(v.get("422") for p in ours["paths"].values() for v in p.values())


def test_the_contract_is_intact() -> None:
    text = CONTRACT.read_text()
    assert text.startswith("# Copyright 2024-2026 BoxLite Contributors")
    assert "Licensed under the Apache License, Version 2.0" in text
