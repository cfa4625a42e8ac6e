//! The OpenAPI 3.1 document of every HTTP route, served at
//! `GET /api/openapi.json`: utoipa builds it from each handler's
//! `#[utoipa::path]` and the types' `ToSchema`; what all routes share (the
//! errors of credentials, JSON bodies and the database, `Retry-After`,
//! `x-request-id`, timestamp formats) is added once here, by
//! [`conventions`], so that no route can forget it.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{auth, conversations, docs, documents, health, messages, search, ws};
use crate::db::documents::Document;
use crate::db::jobs::Job;
use crate::error::ErrorBody;
use crate::types::Source;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ragd",
        description = "Chat with your documents: accounts, conversations and messages answered \
            from the caller's uploaded documents, search, and a WebSocket of events. \
            docs/API.md in the repository is the full contract (ordering, idempotency, \
            limits, event frames)."
    ),
    paths(
        health::healthz,
        health::readyz,
        super::metrics::metrics,
        auth::register,
        auth::login,
        auth::me,
        auth::refresh,
        auth::logout,
        auth::change_password,
        auth::delete_account,
        conversations::create,
        conversations::list,
        conversations::fetch,
        conversations::rename,
        conversations::remove,
        messages::list,
        messages::create,
        messages::cancel,
        messages::retry,
        documents::create,
        documents::list,
        documents::fetch,
        documents::file,
        documents::jobs,
        documents::reprocess,
        documents::remove,
        search::search,
        ws::ticket,
        ws::socket,
        crate::web::page,
        crate::web::asset,
        docs::document,
        docs::page,
        docs::asset,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "conversations", description = "The caller's conversations"),
        (name = "messages", description = "Questions and their answers"),
        (name = "documents", description = "Uploads, their parse jobs and their files"),
        (name = "search", description = "Plain-text search over the caller's documents"),
        (name = "realtime", description = "The event socket and its tickets"),
        (name = "operations", description = "Probes and metrics"),
        (name = "page", description = "The built-in web page"),
        (name = "docs", description = "This document and its interactive page"),
    )
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static [u8] {
    static DOCUMENT: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("utoipa's document is JSON");
        conventions(&mut doc);
        serde_json::to_vec(&doc).expect("a JSON value serializes")
    });
    &DOCUMENT
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut jwt = Http::new(HttpAuthScheme::Bearer);
        jwt.bearer_format = Some("JWT".into());
        jwt.description = Some(
            "The `token` of register, login or refresh. Revoked by a logout or a password change.".into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(jwt));
        components.add_security_scheme(
            "ws_ticket",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "A single-use ticket from `POST /api/ws-ticket` (only for `/ws`).",
            ))),
        );
        let mut metrics = Http::new(HttpAuthScheme::Bearer);
        metrics.description = Some("The metrics token, when the server is configured with one.".into());
        components.add_security_scheme("metrics_token", SecurityScheme::Http(metrics));
    }
}

// Bodies that their handlers build with `json!`: described here, checked
// against real responses by tests/api/openapi.rs.

/// `{"status":"ok"}`.
#[derive(ToSchema)]
pub struct Health {
    #[schema(examples("ok"))]
    pub status: String,
}

/// `{"status":"ready"}`.
#[derive(ToSchema)]
pub struct Ready {
    #[schema(examples("ready"))]
    pub status: String,
}

/// Newest first.
#[derive(ToSchema)]
pub struct DocumentPage {
    pub items: Vec<Document>,
    /// Pass as `before` for the next page; null at the end.
    #[schema(required = true)]
    pub next_before: Option<String>,
}

#[derive(ToSchema)]
pub struct JobList {
    pub items: Vec<Job>,
}

/// Best first.
#[derive(ToSchema)]
pub struct SearchResults {
    pub items: Vec<Source>,
}

#[derive(ToSchema)]
pub struct WsTicket {
    /// For `/ws?ticket=`: single-use.
    pub ticket: String,
    pub expires_at: String,
}

/// `multipart/form-data` with the file in the field `file` (other fields
/// are ignored). The file name's extension decides the type: `.txt`,
/// `.text`, `.md`, `.markdown`, `.html`, `.htm`, `.pdf`, `.docx`, `.csv`,
/// `.json`.
#[derive(ToSchema)]
pub struct UploadForm {
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub file: Vec<u8>,
}

/// The statuses that carry `Retry-After` (seconds).
const RETRY_AFTER: [&str; 3] = ["429", "503", "507"];

/// Adds what every route shares, so no `#[utoipa::path]` repeats it: the
/// errors each kind of operation can answer (a secured one 401, a JSON body
/// 400/408/413/415, a query 400, anything under `/api/` 500 and 503),
/// `Retry-After` and `x-request-id` headers, and `date-time` on timestamps.
fn conventions(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut().filter_map(Value::as_object_mut) {
                add_errors(path, op);
                if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                    for (status, response) in responses.iter_mut() {
                        add_headers(status, response);
                    }
                }
            }
        }
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for schema in schemas.values_mut() {
            let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
                continue;
            };
            for (name, property) in properties.iter_mut() {
                if (name.ends_with("_at") || name == "run_after") && property.is_object() {
                    property["format"] = json!("date-time");
                }
            }
        }
    }
}

fn add_errors(path: &str, op: &mut Map<String, Value>) {
    // Secured: every alternative needs credentials (`{}` would be "none").
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|alternatives| {
            alternatives
                .iter()
                .all(|a| a.as_object().is_some_and(|a| !a.is_empty()))
        });
    let body = op
        .get("requestBody")
        .and_then(|b| b.get("content"))
        .and_then(Value::as_object);
    let json_body = body.is_some_and(|c| c.contains_key("application/json"));
    let any_body = body.is_some();
    let query = op
        .get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    let api = path.starts_with("/api/");
    let mut errors = Vec::new();
    if json_body || query {
        errors.push((
            "400",
            "`bad_request`: malformed JSON, a missing field or a wrong type, a bad query value or cursor",
        ));
    } else if any_body {
        errors.push(("400", "`bad_request`: a malformed body"));
    }
    if secured {
        errors.push((
            "401",
            "`unauthorized`: no, malformed, expired, revoked or badly signed token",
        ));
    }
    if any_body {
        errors.push((
            "408",
            "`request_timeout`: the body stalled or trickled (`Connection: close`)",
        ));
    }
    if json_body {
        errors.push((
            "413",
            "`payload_too_large`: a body above 1 MiB (`Connection: close`)",
        ));
        errors.push((
            "415",
            "`unsupported_media_type`: not `Content-Type: application/json`",
        ));
    }
    if api {
        errors.push((
            "500",
            "`internal`: a bug; the message is always \"internal server error\"",
        ));
        errors.push(("503", "`unavailable`: shutting down, or the database is busy"));
    }
    let responses = op.entry("responses").or_insert_with(|| json!({})).as_object_mut();
    let Some(responses) = responses else { return };
    for (status, description) in errors {
        responses.entry(status).or_insert_with(|| {
            json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
            })
        });
    }
}

fn add_headers(status: &str, response: &mut Value) {
    let Some(response) = response.as_object_mut() else {
        return;
    };
    let headers = response.entry("headers").or_insert_with(|| json!({}));
    headers["x-request-id"] = json!({
        "description": "The request's id (the client's own when it sent a valid one)",
        "schema": {"type": "string"},
    });
    if RETRY_AFTER.contains(&status) {
        headers["Retry-After"] = json!({
            "description": "Seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 1},
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::from_slice(document()).expect("the document is JSON")
    }

    #[test]
    fn it_is_openapi_3_1_and_every_reference_resolves() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} resolves");
        }
    }

    #[test]
    fn shared_errors_are_added_where_they_apply() {
        let doc = doc();
        let me = &doc["paths"]["/api/auth/me"]["get"]["responses"];
        assert!(me["401"].is_object(), "a secured route answers 401");
        let register = &doc["paths"]["/api/auth/register"]["post"]["responses"];
        assert!(register.get("401").is_none(), "register needs no token");
        for status in ["400", "413", "415"] {
            assert!(register[status].is_object(), "a JSON body may be {status}");
        }
        assert!(register["429"]["headers"]["Retry-After"].is_object());
        let health = &doc["paths"]["/healthz"]["get"]["responses"];
        assert!(health.get("503").is_none() && health.get("401").is_none());
        let created = &doc["components"]["schemas"]["Conversation"]["properties"]["created_at"];
        assert_eq!(created["format"], "date-time");
    }

    fn collect_refs(value: &Value, refs: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => refs.push(r.clone()),
                        _ => collect_refs(v, refs),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
            _ => {}
        }
    }
}
