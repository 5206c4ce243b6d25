//! The generated OpenAPI document, served at `GET /openapi.json` and committed
//! as `docs/openapi.json` (a test keeps the two equal and validates it).
//!
//! Every operation is described by a `#[utoipa::path]` on its own handler
//! (`rp`, `browser`, `phone`, `conversation`, `audit`, `ops`, `cosign`), and
//! every schema is derived from the wire types of `bzt-wire`, the same structs
//! the handlers read requests into and write answers from (the audit record
//! from `bzt_core::audit::Record` itself, feature `openapi`), so the document
//! cannot drift from the code. The error answers every operation shares are
//! defined once in `answers.rs` ([`super::answers::BadRequest`], ...) and referenced
//! from the handlers; the error codes and their statuses come from
//! [`bzt_core::ErrorCode`]. WebSocket and SSE messages, which OpenAPI cannot
//! state, are schemas too, named from their operation's `x-websocket` or
//! `x-sse-events` extension.

use super::answers::{
    AdminDisabled, BadRequest, ConversationEnded, ConversationNotFound, CosignerForbidden,
    CosignerUnavailable, Expired, ForbiddenOrigin, NotAnUpgrade, NotFound, PayloadTooLarge,
    QrConflict, RateLimited, Unauthorized, Unavailable,
};
use super::audit::AuditList;
use super::{audit, browser, conversation, cosign, ops, phone, rp};
use axum::Json;
use bzt_wire::{
    BrowserFrame, BrowserMessage, ClaimRequest, ClaimResponse, CompleteRequest, CompleteResponse,
    ConversationRequestAccepted, ConversationRequestInput, ConversationRequestView,
    ConversationView, CosignContext, CosignContextRequest, CreateSessionRequest,
    CreateSessionResponse, ErrorBody, Health, KeyActionRequest, PhoneMessage, PhoneServerFrame,
    Ready, RequesterFrame, RevocationList, RevokeRequest, SerialAnswer, ServiceAnswer, SessionView,
};
use utoipa::openapi::schema::{SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bzt scan-session broker",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
        description = "QR scan-session broker for e-bidding platforms: an RP backend creates a session, its page shows the QR code and waits (WebSocket or SSE), the certificate app on the phone claims the session and completes it with an SM2 signature. A `sign` session may open a conversation (会话签章) in which the phone answers further signing requests without a new scan. Every use of a certificate is written to a tamper-evident audit trail, read with `GET /v1/audit`.\n\nGenerated from the broker's handlers and the wire types of `crates/bzt-wire`; the whole wire contract, of which this document is the HTTP part, is `docs/protocol.md` (v1).\n\nConventions: bodies are JSON (UTF-8) sent with `Content-Type: application/json`; binary fields end in `_b64` (standard base64 with padding); times are RFC 3339 UTC with milliseconds; unknown request fields answer `400 invalid_request` and an optional field sent as `null` is absent; bodies over 256 KiB answer `413`; every non-2xx answer carries the `Error` body and `Cache-Control: no-store` (`429` and `503` also `Retry-After`); any operation may answer `500 internal`; a path the broker does not serve answers `404 not_found` (`no such endpoint`), a method a path does not serve `405 method_not_allowed`. Each error code has one status: see the `ErrorCode` schema's `x-http-status`."
    ),
    servers((url = "http://127.0.0.1:8700", description = "Default `listen` address (development mode).")),
    paths(
        rp::create_session,
        rp::get_session,
        rp::cancel_session,
        browser::preflight,
        browser::websocket,
        browser::events,
        browser::qr_svg,
        browser::qr_png,
        browser::scan_landing_page,
        phone::claim,
        phone::complete,
        conversation::get_conversation,
        conversation::end_conversation,
        conversation::create_request,
        conversation::get_request,
        conversation::requester_socket,
        conversation::phone_socket,
        audit::list,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::list_revocations,
        ops::add_revocation,
        ops::remove_revocation,
        cosign::admin_key,
        cosign::admin_action,
        cosign::admin_grants,
        cosign::admin_reclaim,
        cosign::context,
        serve,
    ),
    components(
        schemas(
            CreateSessionRequest, CreateSessionResponse, SessionView, ErrorBody,
            BrowserFrame, BrowserMessage, ClaimRequest, ClaimResponse, CompleteRequest,
            CompleteResponse, ConversationRequestInput, ConversationRequestAccepted,
            ConversationRequestView, ConversationView, RequesterFrame, PhoneServerFrame,
            PhoneMessage, AuditList, Health, Ready, RevocationList, RevokeRequest, SerialAnswer,
            CosignContextRequest, CosignContext, KeyActionRequest, ServiceAnswer,
        ),
        responses(
            BadRequest, Unauthorized, ForbiddenOrigin, AdminDisabled, NotFound,
            ConversationNotFound, ConversationEnded, QrConflict, Expired, PayloadTooLarge,
            NotAnUpgrade, RateLimited, Unavailable, CosignerForbidden, CosignerUnavailable,
        ),
    ),
    modifiers(&SecuritySchemes, &ErrorCodes),
    tags(
        (name = "rp", description = "Relying-party backend (server to server), authenticated with the app's API key."),
        (name = "browser", description = "The RP's page that shows the QR code and waits, authenticated with the session's browser token."),
        (name = "phone", description = "The certificate app."),
        (name = "conversation", description = "Conversations (会话签章): after one scan, the requester asks for more signatures and the phone answers them over its socket, by tap or automatically (自动确认)."),
        (name = "audit", description = "The audit trail of certificate use (证书使用记录)."),
        (name = "ops", description = "Health, readiness, metrics, this document."),
        (name = "admin", description = "Operator API, enabled when `admin_token` (or `admin_token_sha256`) is configured."),
        (name = "cosign", description = "Key splitting (密钥拆分, docs/key-splitting.md): the context endpoint the co-signing service calls with its own credential."),
    ),
)]
struct ApiDoc;

/// The credentials of docs/protocol.md, each named once.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let bearer = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        let query_t = |description: &str| {
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "t",
                description,
            )))
        };
        components.add_security_scheme("rpApiKey", bearer("The app's API key: `Authorization: Bearer <api_key>`. Missing or unknown: `401 unauthorized`."));
        components.add_security_scheme("browserToken", query_t("The session's `browser_token` from the create answer, as `?t=<browser_token>`. Missing or wrong: `401 unauthorized`."));
        components.add_security_scheme("phoneToken", bearer("The `phone_token` from the claim answer: `Authorization: Bearer <phone_token>`. Missing or wrong: `401 unauthorized`."));
        components.add_security_scheme("requesterToken", query_t("The conversation's requester token (`result.conversation.token`), as `?t=<token>`. Missing or wrong: `401 unauthorized`."));
        components.add_security_scheme("conversationPhoneToken", query_t("The conversation's phone token (`conversation.phone_token` of the complete answer), as `?t=<phone_token>`. Missing or wrong: `401 unauthorized`."));
        components.add_security_scheme("adminToken", bearer("The configured `admin_token`: `Authorization: Bearer <admin_token>`. Missing or wrong: `401 unauthorized`; admin API not configured: `403 forbidden`."));
        components.add_security_scheme("cosignerCredential", bearer("The co-signing service's credential at the broker (`[cosigner] credential`). Missing or wrong: `401 unauthorized`; not configured: `403 forbidden`."));
    }
}

/// The `ErrorCode` schema, from [`bzt_core::ErrorCode::ALL`]: every code, and
/// its one status in `x-http-status`; `Error.error.code` refers to it.
struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let codes = bzt_core::ErrorCode::ALL;
        let mut statuses = utoipa::openapi::extensions::Extensions::default();
        statuses.insert(
            "x-http-status".to_owned(),
            serde_json::Value::Object(
                codes
                    .iter()
                    .map(|c| (c.as_str().to_owned(), c.http_status().into()))
                    .collect(),
            ),
        );
        let schema = utoipa::openapi::ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(codes.iter().map(|c| c.as_str())))
            .description(Some(
                "Stable error code; each has one HTTP status (`x-http-status`).",
            ))
            .extensions(Some(statuses))
            .build();
        components
            .schemas
            .insert("ErrorCode".to_owned(), Schema::Object(schema).into());
        // `ErrorDetail.code` is text in the type (a client keeps a code added
        // later); the document names the codes there are.
        if let Some(RefOr::T(Schema::Object(detail))) = components.schemas.get_mut("ErrorDetail") {
            detail
                .properties
                .insert("code".to_owned(), Ref::from_schema_name("ErrorCode").into());
        }
    }
}

/// The document, as served and committed.
pub fn document() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    which_fields_a_kind_takes(&mut doc);
    session_webhook(&mut doc);
    composed_schemas_stay_open(&mut doc);
    doc
}

/// A schema that another composes with `allOf` must not be closed: its
/// `additionalProperties: false` would refuse the fields the other members
/// add, so no instance could match. utoipa closes every struct that serde
/// reads with `deny_unknown_fields`, which is right for a request on its own
/// but wrong for a part: the audit record's operation and checkpoint are parts
/// of `AuditRecord` (`bzt_core::audit::Record` flattens them), so they are
/// opened here, whatever reads them strictly.
fn composed_schemas_stay_open(doc: &mut serde_json::Value) {
    fn composed(node: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match node {
            serde_json::Value::Object(map) => {
                let members = map.get("allOf").and_then(serde_json::Value::as_array);
                for member in members.into_iter().flatten() {
                    if let Some(name) = member
                        .get("$ref")
                        .and_then(serde_json::Value::as_str)
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    {
                        out.insert(name.to_owned());
                    }
                }
                map.values().for_each(|v| composed(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| composed(v, out)),
            _ => {}
        }
    }
    let mut names = std::collections::BTreeSet::new();
    composed(doc, &mut names);
    for name in names {
        if let Some(schema) = doc["components"]["schemas"][&name].as_object_mut() {
            if schema.get("additionalProperties") == Some(&serde_json::Value::Bool(false)) {
                schema.remove("additionalProperties");
            }
        }
    }
}

/// `webhooks.sessionTerminal` (utoipa has no webhooks yet): the broker POSTs the
/// session view (`bzt_wire::SessionView`, as `crate::webhook` sends it) to the
/// session's `webhook_url` on every terminal transition.
fn session_webhook(doc: &mut serde_json::Value) {
    doc["webhooks"] = serde_json::json!({
        "sessionTerminal": { "post": {
            "summary": "A session reached a terminal state.",
            "description": "Sent to the session's `webhook_url` on every terminal transition, with the session view as body, `User-Agent: bzt-webhook/<version>` and `Bzt-Signature`. Retried on network errors and non-2xx answers with exponential backoff (`webhooks.*` settings); redirects are not followed. Receivers should reject a `t` more than 5 minutes from their clock and compare the HMAC in constant time.",
            "parameters": [{
                "name": "Bzt-Signature", "in": "header", "required": true,
                "description": "`t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, \"<t>.<body>\")>`, where `<body>` is the exact bytes sent.",
                "schema": { "type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$" }
            }],
            "requestBody": { "required": true, "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/SessionView" }
            } } },
            "responses": { "200": { "description": "Any 2xx acknowledges the delivery." } }
        } }
    });
}

/// The rules a struct cannot state: which fields a session's kind takes (the
/// domain answers `400` otherwise, `bzt_core::session`), and `tbs_b64` or
/// `seal`, exactly one, for a conversation request. Stated in the document so
/// a client generated from it (and Schemathesis) knows them.
fn which_fields_a_kind_takes(doc: &mut serde_json::Value) {
    use serde_json::json;
    let schemas = &mut doc["components"]["schemas"];
    let kind_is =
        |kind: &str| json!({ "required": ["kind"], "properties": { "kind": { "const": kind } } });
    schemas["CreateSessionRequest"]["allOf"] = json!([
        {
            "if": kind_is("sign"),
            "then": { "oneOf": [{ "required": ["tbs_b64"] }, { "required": ["seal"] }] },
            "else": { "not": { "anyOf": [
                { "required": ["tbs_b64"] }, { "required": ["conversation"] }, { "required": ["seal"] }
            ] } }
        },
        {
            "if": kind_is("decrypt"),
            "then": { "required": ["envelope_header_b64", "reply_key"] },
            "else": { "not": { "anyOf": [
                { "required": ["envelope_header_b64"] }, { "required": ["reply_key"] }, { "required": ["opening"] }
            ] } }
        }
    ]);
    schemas["ConversationRequestInput"]["oneOf"] =
        json!([{ "required": ["tbs_b64"] }, { "required": ["seal"] }]);
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    operation_id = "openapi",
    responses((status = 200, description = "An OpenAPI 3.1 document, generated from the handlers and `bzt-wire` (committed as `docs/openapi.json`).", body = Object)),
    security(())
)]
pub async fn serve() -> Json<serde_json::Value> {
    Json(document())
}
