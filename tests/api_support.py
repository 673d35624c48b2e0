"""Calling the index API in tests: a small HTTP client on urllib, and checking answers
against the API's own OpenAPI document."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from typing import Any

import jsonschema

JSON_TYPES = ("application/json", "application/problem+json")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        """Everything the answer says, as text: headers, body, and the XML inside an Excel
        workbook (so that a search for a value covers the cells)."""
        parts = [f"{k}: {v}" for k, v in self.headers.items()]
        if self.body[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(self.body)) as archive:
                parts += [archive.read(n).decode("utf-8", "replace") for n in archive.namelist()]
        else:
            parts.append(self.body.decode("utf-8", "replace"))
        return "\n".join(parts)


class Api:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def call(self, method: str, path: str, token: str | None = None, *,
             json_body: Any = None, data: bytes | None = None,
             content_type: str | None = None, query: dict[str, str] | None = None,
             headers: dict[str, str] | None = None, timeout: float = 60) -> Answer:
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            content_type = content_type or "application/json"
        if content_type is not None:
            sent["Content-Type"] = content_type
        request = urllib.request.Request(url, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Answer(response.status, {k.lower(): v for k, v in response.headers.items()},
                              response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, {k.lower(): v for k, v in error.headers.items()},
                          error.read())

    def get(self, path: str, token: str | None = None, **query: str) -> Answer:
        return self.call("GET", path, token, query=query or None)


def multipart(field: str, filename: str, content: bytes, kind: str) -> tuple[bytes, str]:
    boundary = "----anon-test-boundary-7f3a"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: {kind}\r\n\r\n").encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def check_answer(document: dict[str, Any], template: str, method: str, answer: Answer) -> None:
    """The answer is one the document describes for this operation: a documented status (or
    the default), a documented content type, and a body valid against its schema."""
    operation = document["paths"][template][method.lower()]
    responses = operation["responses"]
    spec = responses.get(str(answer.status)) or responses.get("default")
    assert spec is not None, f"{method} {template}: {answer.status} is not documented"
    content = spec.get("content")
    if not content:
        return
    assert answer.content_type in content, (
        f"{method} {template}: {answer.status} answered {answer.content_type}, "
        f"the document says {sorted(content)}")
    schema = content[answer.content_type].get("schema")
    if schema is None or answer.content_type not in JSON_TYPES:
        return
    rooted = {"components": document["components"], "allOf": [schema]}
    validator = jsonschema.Draft202012Validator(
        rooted, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(answer.json()), key=lambda e: list(e.path))
    assert not errors, (f"{method} {template} ({answer.status}): "
                        + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5]))
