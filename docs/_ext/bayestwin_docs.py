"""Sphinx extension of the bayestwin documentation.

At ``builder-inited`` it writes, under ``docs/_generated/`` (ignored by git):

* ``openapi.json``: the REST API's OpenAPI document, from :func:`bayestwin.api.create_app`;
* ``openapi.md``: that document as static tables (endpoints, parameters, bodies,
  responses, schemas), included by ``api/rest.md``; no script renders it in the browser;
* ``<tool>.schema.json``: each agent tool's JSON Schema (:func:`bayestwin.tools.tool_schemas`).

It also resolves cross-references to re-exported names (``bayestwin.service.TwinService``)
to the module that defines and documents the object (``bayestwin.service.twin.TwinService``).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


# -- OpenAPI as markdown tables --------------------------------------------------------


def _label(name: str) -> str:
    return "rest-schema-" + name.lower().replace("_", "-")


def _cell(text: Any) -> str:
    """One table cell: a single line, pipes escaped."""
    value = " ".join(str(text).split())
    return value.replace("|", "\\|") or " "


def _type(schema: dict[str, Any]) -> str:
    """A short markdown description of a JSON Schema's type, with links to components."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_label(name)})"
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            parts = [_type(s) for s in schema[key]]
            return " or ".join(p for p in parts if p)
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return "array of " + _type(schema.get("items", {}))
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        if isinstance(extra, dict) and extra:
            return "object of " + _type(extra)
    text = str(kind)
    if "format" in schema:
        text += f" ({schema['format']})"
    return text


def _constraints(schema: dict[str, Any]) -> str:
    words = {
        "minimum": ">=",
        "exclusiveMinimum": ">",
        "maximum": "<=",
        "exclusiveMaximum": "<",
        "minLength": "length >=",
        "maxLength": "length <=",
        "minItems": "items >=",
        "maxItems": "items <=",
    }
    found = [f"{word} {schema[key]}" for key, word in words.items() if key in schema]
    for sub in schema.get("anyOf", []):
        found += [f"{word} {sub[key]}" for key, word in words.items() if key in sub]
    if "default" in schema:
        found.append(f"default `{json.dumps(schema['default'])}`")
    return ", ".join(found)


def _content_rows(content: dict[str, Any]) -> list[str]:
    return [f"`{media}`: {_type(body.get('schema', {}))}" for media, body in content.items()]


def openapi_markdown(spec: dict[str, Any]) -> str:
    """The OpenAPI document as MyST markdown: one section per endpoint, then the schemas."""
    lines: list[str] = []
    info = spec.get("info", {})
    lines += [
        f"OpenAPI {spec.get('openapi', '')}, {info.get('title', '')} version "
        f"{info.get('version', '')}.",
        "",
    ]
    lines += ["| method | path | summary |", "|---|---|---|"]
    operations = [
        (path, method, op)
        for path, item in spec.get("paths", {}).items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]
    for path, method, op in operations:
        lines.append(f"| {method.upper()} | `{path}` | {_cell(op.get('summary', ''))} |")
    lines.append("")
    lines += ["## Endpoints", ""]
    for path, method, op in operations:
        lines += [f"### {method.upper()} `{path}`", ""]
        if op.get("description"):
            lines += [" ".join(op["description"].split()), ""]
        params = op.get("parameters", [])
        if params:
            lines += [
                "| parameter | in | type | required | constraints | description |",
                "|---|---|---|---|---|---|",
            ]
            for p in params:
                schema = p.get("schema", {})
                lines.append(
                    f"| `{p['name']}` | {p.get('in', '')} | {_cell(_type(schema))} "
                    f"| {'yes' if p.get('required') else 'no'} | {_cell(_constraints(schema))} "
                    f"| {_cell(p.get('description', schema.get('description', '')))} |"
                )
            lines.append("")
        body = op.get("requestBody")
        if body:
            rows = "; ".join(_content_rows(body.get("content", {})))
            required = " (required)" if body.get("required") else ""
            lines += [f"Request body{required}: {rows}", ""]
        responses = op.get("responses", {})
        if responses:
            lines += ["| status | description | body |", "|---|---|---|"]
            for code, response in responses.items():
                rows = "; ".join(_content_rows(response.get("content", {})))
                lines.append(
                    f"| {code} | {_cell(response.get('description', ''))} | {_cell(rows)} |"
                )
            lines.append("")
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        lines += ["## Schemas", ""]
    for name, schema in schemas.items():
        lines += [f"({_label(name)})=", f"### {name}", ""]
        if schema.get("description"):
            lines += [" ".join(schema["description"].split()), ""]
        if "enum" in schema:
            lines += ["One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".", ""]
        props = schema.get("properties", {})
        if props:
            required = set(schema.get("required", []))
            lines += [
                "| field | type | required | constraints | description |",
                "|---|---|---|---|---|",
            ]
            for field, prop in props.items():
                lines.append(
                    f"| `{field}` | {_cell(_type(prop))} | {'yes' if field in required else 'no'} "
                    f"| {_cell(_constraints(prop))} | {_cell(prop.get('description', ''))} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


def openapi_document() -> dict[str, Any]:
    """The REST API's OpenAPI document, from the FastAPI app (no key, no server started)."""
    from bayestwin.api import create_app

    return create_app(api_key=None).openapi()


def _write_generated(app: Sphinx) -> None:
    from bayestwin.tools import tool_schemas

    out = Path(app.srcdir) / "_generated"
    out.mkdir(exist_ok=True)
    spec = openapi_document()
    _write_if_changed(out / "openapi.json", json.dumps(spec, indent=2) + "\n")
    _write_if_changed(out / "openapi.md", openapi_markdown(spec))
    for name, schema in tool_schemas().items():
        _write_if_changed(out / f"{name}.schema.json", json.dumps(schema, indent=2) + "\n")


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it (keeps Sphinx's incremental reads)."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


# -- re-exported names ----------------------------------------------------------------


def _locate(target: str) -> Any:
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _resolve_reexport(
    app: Sphinx, env: BuildEnvironment, node: nodes.Element, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve ``pkg.Name`` to ``pkg.module.Name`` where the object is documented."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("bayestwin."):
        return None
    obj = _locate(target)
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    real = f"{module}.{qualname}"
    if real == target:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], real, node, contnode
    )


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the generated files and the cross-reference resolver."""
    app.connect("builder-inited", _write_generated)
    app.connect("missing-reference", _resolve_reexport)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
