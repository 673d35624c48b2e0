"""The OpenAPI 3.1 description of the index API, served at ``/openapi.json``.

Written by hand, next to the handlers it describes; the tests call every operation in it and
validate the answers against it, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
from typing import Any

JSON = "application/json"
PROBLEM = "application/problem+json"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **more: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **more}


STRING = {"type": "string"}
# A list of identifiers in a request, as the handlers take them.
NAMES = {"type": "array", "minItems": 1, "maxItems": 1000,
         "items": {"type": "string", "minLength": 1, "maxLength": 128}}
TEXT = {"type": "string", "pattern": "\\S"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
DATE_TIME = {"type": "string", "format": "date-time"}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _page(item: str) -> dict[str, Any]:
    return _object(["items", "page", "page_size", "has_more"],
                   items={"type": "array", "items": _ref(item)}, page=INTEGER,
                   page_size=INTEGER, has_more=BOOLEAN)


SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object", "required": ["type", "title", "status", "detail"],
        "description": "RFC 9457 problem details; never quotes an original value",
        "properties": {"type": STRING, "title": STRING, "status": INTEGER, "detail": STRING,
                       "line": _nullable("integer"), "reason": STRING, "kind": STRING},
    },
    "Session": _object(["name", "role", "permissions"], name=STRING,
                       role={"enum": ["operator", "phi-reader", "admin"]},
                       permissions={"type": "array", "items": STRING}),
    "Patient": _object(
        ["pseudo_patient_id", "pseudo_patient_name", "studies", "instances", "first_seen",
         "exported_at"],
        pseudo_patient_id=STRING, pseudo_patient_name=STRING, studies=INTEGER,
        instances=INTEGER, first_seen=DATE_TIME, exported_at=_nullable("string"),
        original={**_object(["patient_id", "issuer", "patient_name", "date_offset_days"],
                            patient_id=STRING, issuer=STRING, patient_name=STRING,
                            date_offset_days=INTEGER),
                  "description": "only with phi=true (phi-reader; audited)"},
        study_list={"type": "array", "items": _ref("Study")}),
    "Study": _object(
        ["pseudo_study_uid", "pseudo_patient_id", "pseudo_study_date", "pseudo_accession",
         "series", "instances", "set_status", "first_seen", "exported_at"],
        pseudo_study_uid=STRING, pseudo_patient_id=STRING, pseudo_study_date=STRING,
        pseudo_accession=STRING, series=INTEGER, instances=INTEGER,
        set_status=_nullable("string"), first_seen=DATE_TIME,
        exported_at=_nullable("string"),
        original={**_object(["study_uid", "study_date", "accession", "patient_id",
                             "patient_name"],
                            study_uid=STRING, study_date=STRING, accession=STRING,
                            patient_id=STRING, patient_name=STRING),
                  "description": "only with phi=true (phi-reader; audited)"}),
    "PatientIdentity": _object(
        ["pseudo_patient_id", "pseudo_patient_name", "original_patient_id", "original_issuer",
         "original_patient_name", "date_offset_days", "studies"],
        pseudo_patient_id=STRING, pseudo_patient_name=STRING, original_patient_id=STRING,
        original_issuer=STRING, original_patient_name=STRING, date_offset_days=INTEGER,
        studies={"type": "array", "items": _object(
            ["pseudo_study_uid", "pseudo_study_date", "pseudo_accession", "original_study_uid",
             "original_study_date", "original_accession"],
            pseudo_study_uid=STRING, pseudo_study_date=STRING, pseudo_accession=STRING,
            original_study_uid=STRING, original_study_date=STRING,
            original_accession=STRING)}),
    "Status": _object(
        ["site_id", "received", "deidentified", "quarantined", "quarantine_reasons",
         "patients", "studies", "exported", "rt_sets", "open_jobs", "export_enabled",
         "storage_scp"],
        site_id=STRING, received=INTEGER, deidentified=INTEGER, quarantined=INTEGER,
        quarantine_reasons={"type": "array", "items": _object(
            ["reason_code", "objects"], reason_code=STRING, objects=INTEGER)},
        patients=INTEGER, studies=INTEGER,
        exported=_object(["patients", "instances_sent", "instances_failed"],
                         patients=INTEGER, instances_sent=INTEGER, instances_failed=INTEGER),
        rt_sets=_object(["complete", "waiting", "inconsistent"], complete=INTEGER,
                        waiting=INTEGER, inconsistent=INTEGER),
        open_jobs={"type": "object", "additionalProperties": INTEGER},
        export_enabled=BOOLEAN,
        storage_scp=_object(
            ["ae_title", "port", "state"], ae_title=STRING, port=INTEGER,
            state={"enum": ["listening", "elsewhere"],
                   "description": "listening: the SCP runs in this process (anon serve); "
                                  "elsewhere: it is its own service (scp-ingest)"})),
    "RtSet": _object(
        ["pseudo_study_uid", "kind", "status", "objects", "problems", "checked_at"],
        pseudo_study_uid=STRING, kind={"enum": ["rt", "other"]},
        status={"enum": ["complete", "waiting", "inconsistent"]}, objects=INTEGER,
        problems={"type": "array"}, checked_at=DATE_TIME),
    "JobItem": _object(
        ["position", "line", "status", "message", "updated_at"],
        position=INTEGER, line=_nullable("integer"), status=STRING, message=STRING,
        expected=INTEGER, verified=INTEGER, missing=INTEGER, remaining=INTEGER,
        completed=INTEGER, failed=INTEGER, warning=INTEGER, attempts=INTEGER,
        updated_at=DATE_TIME,
        key={**STRING, "description": "exports only: the pseudonymous patient ID"}),
    "Job": _object(
        ["id", "kind", "status", "summary", "created_at", "started_at", "finished_at",
         "totals", "items"],
        id=INTEGER, kind={"enum": ["retrieve", "export"]},
        status={"enum": ["queued", "running", "complete", "incomplete", "failed"]},
        summary=STRING, created_at=DATE_TIME, started_at=_nullable("string"),
        finished_at=_nullable("string"),
        totals={"type": "object", "additionalProperties": INTEGER},
        items={"type": "array", "items": _ref("JobItem")}),
    "JobStarted": _object(["job", "url", "items", "lines"], job=INTEGER, url=STRING,
                          items=INTEGER, lines={"type": "array", "items": {"type": "object"}}),
    "QuarantineEntry": _object(["key", "stage", "reason_code", "reason", "quarantined_at"],
                               key=STRING, stage=STRING, reason_code=STRING, reason=STRING,
                               quarantined_at=DATE_TIME),
    "LogEntry": {"type": "object", "required": ["at", "service", "level", "message"],
                 "properties": {"at": DATE_TIME, "service": STRING, "level": STRING,
                                "logger": STRING, "message": STRING,
                                "fields": {"type": "object"}}},
    "QueryMatch": _object(
        ["ref", "modalities", "series", "instances", "already_imported", "pseudo_study_uid",
         "pseudo_patient_id"],
        ref={**STRING, "description": "names the study in a retrieve (kept for a day)"},
        modalities={"type": "array", "items": STRING}, series=_nullable("integer"),
        instances=_nullable("integer"), already_imported=BOOLEAN,
        pseudo_study_uid=_nullable("string"), pseudo_patient_id=_nullable("string"),
        original={**_object(["study_uid", "patient_name", "patient_id", "study_date",
                             "accession", "description"],
                            study_uid=STRING, patient_name=STRING, patient_id=STRING,
                            study_date=STRING, accession=STRING, description=STRING),
                  "description": "only with phi=true (phi-reader; audited)"}),
    "Element": _object(["tag", "keyword", "name", "vr", "vm", "length", "value", "depth"],
                       tag=STRING, keyword=STRING, name=STRING, vr=STRING, vm=INTEGER,
                       length=INTEGER, value=STRING, depth=INTEGER),
    "Elements": _object(
        ["transfer_syntax", "file_meta", "elements", "frames"],
        transfer_syntax=_object(["uid", "name"], uid=STRING, name=STRING),
        file_meta={"type": "array", "items": _ref("Element")},
        elements={"type": "array", "items": _ref("Element")}, frames=INTEGER),
    "Instance": _object(
        ["pseudo_sop_instance_uid", "pseudo_series_uid", "sop_class_uid", "modality",
         "size_bytes", "stored"],
        pseudo_sop_instance_uid=STRING, pseudo_series_uid=STRING, sop_class_uid=STRING,
        modality=STRING, size_bytes=INTEGER, stored=BOOLEAN),
    "Document": _object(
        ["kind", "source", "text", "dialect", "sha256", "version", "changed_by", "changed_at"],
        kind={"enum": ["script", "filter"]}, source={"enum": ["index", "file", "built-in"]},
        text=_nullable("string"), dialect=_nullable("string"), sha256=_nullable("string"),
        version=_nullable("integer"), changed_by=_nullable("string"),
        changed_at=_nullable("string"), name=_nullable("string"),
        options={"type": "array", "items": STRING}),
    "DocumentChange": _object(
        ["kind", "version", "source", "text", "dialect", "sha256", "changed_at", "changed_by",
         "replaced_at"],
        kind={"enum": ["script", "filter"]}, version=INTEGER,
        source={"enum": ["index", "settings"]}, text=_nullable("string"),
        dialect=_nullable("string"), sha256=_nullable("string"), changed_at=DATE_TIME,
        changed_by=STRING, replaced_at=_nullable("string")),
    "AuditEvent": _object(
        ["id", "at", "actor", "role", "client", "action", "target", "outcome", "status",
         "detail"],
        id=INTEGER, at=DATE_TIME, actor=STRING, role=STRING, client=STRING, action=STRING,
        target=STRING, outcome=STRING, status=_nullable("integer"), detail={"type": "object"}),
    "Token": _object(["name", "role", "created_by", "created_at", "revoked_at",
                      "last_used_at"],
                     name=STRING, role={"enum": ["operator", "phi-reader", "admin"]},
                     created_by=STRING, created_at=DATE_TIME, revoked_at=_nullable("string"),
                     last_used_at=_nullable("string"), token=STRING),
    "ExportSwitch": {**_object(["enabled"], enabled=BOOLEAN), "additionalProperties": False},
}
SCHEMAS["PatientPage"] = _page("Patient")
SCHEMAS["StudyPage"] = _page("Study")
SCHEMAS["RtSetPage"] = _page("RtSet")
SCHEMAS["JobPage"] = _page("Job")
SCHEMAS["QuarantinePage"] = _page("QuarantineEntry")
SCHEMAS["InstancePage"] = _page("Instance")


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM: {"schema": _ref("Problem")}}}


COMMON = {
    "400": _problem("a malformed parameter or body"),
    "401": _problem("no token, or an unknown or revoked one"),
    "403": _problem("the token's role may not do this"),
    "default": _problem("any other refusal (RFC 9457 problem details)"),
}


def _parameter(name: str, where: str, schema: dict[str, Any], description: str = "",
               required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": description}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return _parameter(name, "query", schema, description)


PAGE = [_query("page", {"type": "integer", "minimum": 1, "maximum": 1000000}, "1, 2, ..."),
        _query("page_size", {"type": "integer", "minimum": 1, "maximum": 500},
               "default 50")]
PHI_FLAG = _query("phi", {"type": "boolean"},
                  "include original values (phi-reader only; audited and rate-limited)")
DATE = {"type": "string", "pattern": "^[0-9]{4}-?[0-9]{2}-?[0-9]{2}$"}
UID = {"type": "string", "pattern": "^[0-9.]{1,64}$"}
EXPORTED = _query("exported", {"enum": ["true", "false"]}, "export state of the patient")


def _operation(operation_id: str, tag: str, summary: str, responses: dict[str, Any],
               parameters: list[dict[str, Any]] | None = None,
               body: dict[str, Any] | None = None, role: str = "operator") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id, "tags": [tag], "summary": summary,
        "description": f"Role: {role}.", "responses": {**responses, **COMMON},
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    return operation


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON body; fields other than those described are refused."""
    if schema.get("type") == "object":
        schema = {**schema, "additionalProperties": False}
    return {JSON: {"schema": schema}}


def _upload(*types: str) -> dict[str, Any]:
    content: dict[str, Any] = {kind: {"schema": {"type": "string", "format": "binary"}}
                               for kind in types}
    content["multipart/form-data"] = {"schema": _object(
        ["file"], file={"type": "string", "format": "binary"})}
    return content


NOT_FOUND = {"404": _problem("no such resource")}
TOO_MANY = {"429": _problem("too many reads of original values for this token")}
UPSTREAM = {"502": _problem("the PACS or destination failed"),
            "503": _problem("the service is not running or not configured")}
UNSUPPORTED = {"415": _problem("wrong content type"), "413": _problem("body too large")}
ACCEPTED = {"202": {"description": "the job was created; follow its URL",
                    "headers": {"Location": {"schema": STRING}},
                    "content": {JSON: {"schema": _ref("JobStarted")}}}}


def _paths() -> dict[str, Any]:
    pseudonym = _parameter("pseudo_patient_id", "path", {"type": "string", "maxLength": 64},
                           "a pseudonymous patient ID, e.g. 123456-000001")
    kind = _parameter("kind", "path", {"enum": ["script", "filter"]})
    public: dict[str, Any] = {"security": []}
    return {
        "/livez": {"get": {**public, "operationId": "livez", "tags": ["health"],
                           "summary": "the process runs",
                           "responses": {"200": _json({"type": "object"})}}},
        "/readyz": {"get": {**public, "operationId": "readyz", "tags": ["health"],
                            "summary": "the database, object store and broker answer",
                            "responses": {"200": _json({"type": "object"}),
                                          "503": _json({"type": "object"}, "not ready")}}},
        "/metrics": {"get": {**public, "operationId": "metrics", "tags": ["health"],
                             "summary": "Prometheus metrics",
                             "responses": {"200": {"description": "OK", "content": {
                                 "text/plain": {"schema": STRING}}}}}},
        "/openapi.json": {"get": {**public, "operationId": "openapi", "tags": ["health"],
                                  "summary": "this document",
                                  "responses": {"200": _json({"type": "object"})}}},
        "/api/v1/session": {"get": _operation(
            "session", "index", "who the token is and what its role may do",
            {"200": _json(_ref("Session"))})},
        "/api/v1/patients": {"get": _operation(
            "listPatients", "index", "patients, by pseudonymous ID",
            {"200": _json(_ref("PatientPage")), **TOO_MANY},
            [*PAGE, _query("search", {"type": "string", "maxLength": 64},
                           "beginning of a pseudonymous patient ID"), EXPORTED,
             _query("first_seen_from", DATE), _query("first_seen_to", DATE), PHI_FLAG])},
        "/api/v1/patients/{pseudo_patient_id}": {"get": _operation(
            "getPatient", "index", "one patient and their studies (pseudonymous)",
            {"200": _json(_ref("Patient")), **NOT_FOUND}, [pseudonym])},
        "/api/v1/patients/{pseudo_patient_id}/original": {"get": _operation(
            "lookupPatient", "index",
            "the pseudonym lookup: original name, ID and studies (audited, rate-limited)",
            {"200": _json(_ref("PatientIdentity")), **NOT_FOUND, **TOO_MANY}, [pseudonym],
            role="phi-reader")},
        "/api/v1/studies": {"get": _operation(
            "listStudies", "index", "studies, with series and instance counts",
            {"200": _json(_ref("StudyPage")), **TOO_MANY},
            [*PAGE, _query("patient", {"type": "string", "maxLength": 64},
                           "a pseudonymous patient ID"),
             _query("search", {"type": "string", "maxLength": 64},
                    "beginning of a pseudonymous study UID or patient ID"),
             _query("study_date_from", DATE, "pseudonymous (shifted) study date"),
             _query("study_date_to", DATE), EXPORTED, PHI_FLAG])},
        "/api/v1/studies/{pseudo_study_uid}/instances": {"get": _operation(
            "listInstances", "objects", "the de-identified instances of a study",
            {"200": _json(_ref("InstancePage")), **NOT_FOUND},
            [_parameter("pseudo_study_uid", "path", UID), *PAGE])},
        "/api/v1/index.xlsx": {"get": _operation(
            "indexWorkbook", "index",
            "the whole index as the RSNA Anonymizer's Excel workbook, one row per study "
            "(original values only with phi=true)",
            {"200": {"description": "the workbook", "content": {
                XLSX: {"schema": {"type": "string", "format": "binary"}}}}, **TOO_MANY},
            [PHI_FLAG])},
        "/api/v1/rt-tracking": {"get": _operation(
            "trackingDays", "index", "days on which the RT batch wrote tracking rows",
            {"200": _json(_object(["items"], items={"type": "array", "items": _object(
                ["day", "rows"], day={"type": "string", "format": "date"},
                rows=INTEGER)}))})},
        "/api/v1/rt-tracking/{day}": {"get": _operation(
            "trackingFile", "index", "one day's RT batch tracking file (audited)",
            {"200": {"description": "tracking_YYYYMMDD.csv",
                     "content": {"text/csv": {"schema": STRING}}}, **NOT_FOUND, **TOO_MANY},
            [_parameter("day", "path", {"type": "string", "format": "date"})],
            role="phi-reader")},
        "/api/v1/status": {"get": _operation(
            "status", "status", "received, de-identified, quarantined, exported",
            {"200": _json(_ref("Status"))})},
        "/api/v1/rt-sets": {"get": _operation(
            "listRtSets", "status", "each study's set status and problems",
            {"200": _json(_ref("RtSetPage"))},
            [*PAGE, _query("status", {"enum": ["complete", "waiting", "inconsistent"]}),
             _query("study", {"type": "string", "maxLength": 64},
                    "a pseudonymous study UID")])},
        "/api/v1/jobs": {"get": _operation(
            "listJobs", "status", "retrieves and exports with their progress",
            {"200": _json(_ref("JobPage"))},
            [*PAGE, _query("kind", {"enum": ["retrieve", "export"]}),
             _query("status", {"enum": ["queued", "running", "complete", "incomplete",
                                        "failed"]})])},
        "/api/v1/jobs/{job}": {"get": _operation(
            "getJob", "status", "one job, item by item",
            {"200": _json(_ref("Job")), **NOT_FOUND},
            [_parameter("job", "path", {"type": "string", "pattern": "^[0-9]{1,18}$"})])},
        "/api/v1/quarantine": {"get": _operation(
            "listQuarantine", "status", "objects refused, with reasons",
            {"200": _json(_ref("QuarantinePage"))},
            [*PAGE, _query("reason_code", {"type": "string", "maxLength": 64})])},
        "/api/v1/quarantine/release": {"post": _operation(
            "releaseQuarantined", "status", "send a quarantined object through again",
            {"202": _json(_object(["released", "incoming_key"], released=STRING,
                                  incoming_key=STRING)), **NOT_FOUND, **UNSUPPORTED},
            body=_json_body(_object(["key"], key={"type": "string", "minLength": 1,
                                                          "maxLength": 300},
                                    accept_burned_in_annotation=BOOLEAN)), role="admin")},
        "/api/v1/quarantine/purge": {"post": _operation(
            "purgeQuarantine", "status", "delete quarantined objects",
            {"200": _json(_object(["purged"], purged=INTEGER)), **UNSUPPORTED},
            body=_json_body({"type": "object", "properties": {
                "older_than_days": _nullable("number", minimum=0, maximum=36500)}}),
            role="admin")},
        "/api/v1/log": {"get": _operation(
            "recentErrors", "status", "recent warnings and errors of every service",
            {"200": _json(_object(["items"], items={"type": "array",
                                                    "items": _ref("LogEntry")}))},
            [_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
             _query("since_minutes", {"type": "integer", "minimum": 0, "maximum": 525600}),
             _query("service", {"type": "string", "maxLength": 64})])},
        "/api/v1/query": {"post": _operation(
            "queryPacs", "commands", "one study-level C-FIND of the PACS (audited)",
            {"200": _json(_object(["studies"], studies={"type": "array",
                                                       "items": _ref("QueryMatch")})),
             **UPSTREAM, **UNSUPPORTED, **TOO_MANY},
            [PHI_FLAG],
            body=_json_body({"type": "object", "additionalProperties": False,
                             "minProperties": 1, "properties": {
                                 name: {"type": "string", "maxLength": 64, "pattern": "\\S"}
                                 for name in (
                                     "patient_name", "patient_id", "study_date", "accession",
                                     "modality")}}))},
        "/api/v1/retrieves": {"post": _operation(
            "retrieve", "commands",
            "retrieve studies: query references, Study Instance UIDs or an accession list",
            {**ACCEPTED, **UPSTREAM, **UNSUPPORTED},
            body=_json_body({"type": "object", "minProperties": 1, "maxProperties": 1,
                             "properties": {
                                 "refs": NAMES, "study_uids": NAMES,
                                 "accessions": TEXT}}))},
        "/api/v1/retrieves/accession-list": {"post": _operation(
            "retrieveAccessionList", "commands",
            "retrieve an accession list (one key per line, // comments, SI: study UIDs)",
            {**ACCEPTED, **UPSTREAM, **UNSUPPORTED},
            body={"text/plain": {"schema": STRING}, **_upload()})},
        "/api/v1/retrieves/batch": {"post": _operation(
            "retrieveBatch", "commands", "retrieve every row of a batch spreadsheet",
            {**ACCEPTED, **UPSTREAM, **UNSUPPORTED}, body=_upload(XLSX, "text/csv"))},
        "/api/v1/exports": {"post": _operation(
            "export", "commands", "export patients, or all not yet exported",
            {**ACCEPTED, **UPSTREAM, **UNSUPPORTED, "409": _problem("export is off")},
            body=_json_body({"type": "object", "additionalProperties": False, "properties": {
                "patients": NAMES,
                "all_pending": BOOLEAN, "force": BOOLEAN, "now": BOOLEAN}}))},
        "/api/v1/export/enabled": {
            "get": _operation("exportSwitch", "commands", "whether export is on",
                              {"200": _json(_ref("ExportSwitch"))}),
            "put": _operation("setExportSwitch", "commands", "switch export on or off",
                              {"200": _json(_ref("ExportSwitch")), **UNSUPPORTED},
                              body=_json_body(SCHEMAS["ExportSwitch"]))},
        "/api/v1/instances/{pseudo_sop_instance_uid}/elements": {"get": _operation(
            "elements", "objects", "the elements of a de-identified object",
            {"200": _json(_ref("Elements")), **NOT_FOUND,
             "422": _problem("the object cannot be read")},
            [_parameter("pseudo_sop_instance_uid", "path", UID)])},
        "/api/v1/instances/{pseudo_sop_instance_uid}/frames/{frame}": {"get": _operation(
            "frame", "objects", "a frame of a de-identified object as PNG",
            {"200": {"description": "the frame", "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}}}},
             **NOT_FOUND, "422": _problem("the frame cannot be rendered")},
            [_parameter("pseudo_sop_instance_uid", "path", UID),
             _parameter("frame", "path", {"type": "string", "pattern": "^[0-9]{1,7}$"},
                        "1, 2, ..."),
             _query("center", {"type": "number"}, "window centre"),
             _query("width", {"type": "number", "exclusiveMinimum": 0}, "window width")])},
        "/api/v1/config/{kind}": {
            "get": _operation("viewDocument", "configuration",
                              "the active anonymizer script or filter",
                              {"200": _json(_ref("Document")), **NOT_FOUND}, [kind],
                              role="admin"),
            "put": _operation("replaceDocument", "configuration",
                              "replace it (validated first; refused with the line and reason)",
                              {"200": _json(_ref("Document")), **NOT_FOUND, **UNSUPPORTED,
                               "422": _problem("invalid: the line and the reason")},
                              [kind, _query("dialect", {"enum": ["auto", "ctp", "rsna"]})],
                              body={"text/plain": {"schema": STRING}}, role="admin"),
            "delete": _operation("resetDocument", "configuration",
                                 "go back to what the settings name",
                                 {"200": _json(_ref("Document")), **NOT_FOUND}, [kind],
                                 role="admin")},
        "/api/v1/config/{kind}/check": {"post": _operation(
            "checkDocument", "configuration",
            "validate a script or filter without saving it (the line and reason if invalid)",
            {"200": _json(_object(["valid", "dialect"], valid={"const": True},
                                  dialect=_nullable("string"))),
             **NOT_FOUND, **UNSUPPORTED, "422": _problem("invalid: the line and the reason")},
            [kind, _query("dialect", {"enum": ["auto", "ctp", "rsna"]})],
            body={"text/plain": {"schema": STRING}}, role="admin")},
        "/api/v1/config/{kind}/history": {"get": _operation(
            "documentHistory", "configuration", "every change of the script or filter",
            {"200": _json(_object(["items"], items={"type": "array",
                                                    "items": _ref("DocumentChange")})),
             **NOT_FOUND},
            [kind, _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
            role="admin")},
        "/api/v1/site": {"get": _operation(
            "site", "configuration", "the SITEID",
            {"200": _json(_object(["site_id", "created_at"], site_id=STRING,
                                  created_at=_nullable("string")))})},
        "/api/v1/audit": {"get": _operation(
            "auditTrail", "configuration", "the audit trail, newest first",
            {"200": _json(_object(["items"], items={"type": "array",
                                                    "items": _ref("AuditEvent")}))},
            [_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
             _query("before", {"type": "integer", "minimum": 0}, "records older than this id"),
             _query("actor", {"type": "string", "maxLength": 80}),
             _query("since", {"type": "string", "format": "date-time"})], role="admin")},
        "/api/v1/tokens": {
            "get": _operation("listTokens", "configuration", "every token (never the secret)",
                              {"200": _json(_object(["items"], items={
                                  "type": "array", "items": _ref("Token")}))}, role="admin"),
            "post": _operation("createToken", "configuration",
                               "create a token; the answer is the only time it is shown",
                               {"201": _json(_ref("Token")), **UNSUPPORTED,
                                "409": _problem("an active token has this name")},
                               body=_json_body({**_object(
                                   ["name", "role"],
                                   name={"type": "string",
                                         "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"},
                                   role={"enum": ["operator", "phi-reader", "admin"]}),
                                   "additionalProperties": False}),
                               role="admin")},
        "/api/v1/tokens/{name}": {"delete": _operation(
            "revokeToken", "configuration", "revoke a token (it stops working at once)",
            {"200": _json(_ref("Token")), **NOT_FOUND},
            [_parameter("name", "path", {"type": "string", "maxLength": 64})], role="admin")},
    }


@functools.cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DICOM de-identification: index API", "version": "1",
            "description": (
                "The index, status and commands of the de-identification system. Every "
                "path under /api/ needs a bearer token (anon token create). Roles: operator "
                "(status, commands, de-identified objects; never an original value), "
                "phi-reader (also original values, each read audited and rate-limited), "
                "admin (configuration, tokens, audit). Errors are RFC 9457 problem details."),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a token of anon token create"}},
            "schemas": SCHEMAS,
        },
        "paths": _paths(),
    }
