//! The generated OpenAPI document, served at `GET /openapi.json` and committed
//! as `docs/openapi.json` (a test keeps the two equal and validates it).
//!
//! Its schemas are derived from the wire types of `bzt-wire`, the same structs
//! the handlers read requests into and write answers from, so the document
//! cannot drift from the code. It covers the operations whose messages have
//! been moved to typed structs (`POST /v1/sessions`,
//! `POST /v1/conversations/{id}/requests`); `docs/openapi.yaml` still describes the whole
//! API by hand until the rest follow (issue 16, step 4).

use axum::Json;
use bzt_wire::{
    ConversationPolicyInput, ConversationRequestAccepted, ConversationRequestInput,
    CreateSessionRequest, CreateSessionResponse, DisplayText, ErrorBody, ErrorDetail,
    ExpectCertInput, Kind, OpeningInput, RequesterInput, SealInput,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// `POST /v1/sessions`: create a scan session (docs/protocol.md "RP backend API").
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "rp",
    operation_id = "createSession",
    request_body = CreateSessionRequest,
    responses(
        (status = 201, description = "Created: a `pending` session with `version` 1.", body = CreateSessionResponse),
        (status = 400, description = "`invalid_request`: malformed JSON, unknown or missing fields, or a value outside its constraints; the message names the field.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the API key is missing or not valid.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB, or `tbs_b64` decodes to more than 64 KiB.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many creates for this app; see `Retry-After`.", body = ErrorBody),
        (status = 503, description = "`unavailable`: the session store does not answer; see `Retry-After`.", body = ErrorBody),
    ),
    security(("rpApiKey" = []))
)]
#[allow(dead_code)] // Only its attribute is used: the handler is `rp::create_session`.
fn create_session() {}

/// `POST /v1/conversations/{id}/requests`: one more signature (会话签章).
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/requests",
    tag = "conversation",
    operation_id = "createConversationRequest",
    params(("id" = String, Path, description = "The conversation id (`conversation.id` of the approved session's result).")),
    request_body = ConversationRequestInput,
    responses(
        (status = 202, description = "Queued for the phone; the outcome arrives on the requester socket or by polling the request.", body = ConversationRequestAccepted),
        (status = 400, description = "`invalid_request`: malformed JSON, unknown or missing fields, both or neither of `tbs_b64` and `seal`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: the API key is missing or not valid.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation for this app.", body = ErrorBody),
        (status = 409, description = "`conflict`: `max_requests` reached with requests unanswered, or 32 requests already wait for the phone.", body = ErrorBody),
        (status = 410, description = "`expired`: the conversation has ended (the message says why).", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB, or `tbs_b64` decodes to more than 64 KiB.", body = ErrorBody),
        (status = 503, description = "`unavailable`: the store does not answer; see `Retry-After`.", body = ErrorBody),
    ),
    security(("rpApiKey" = []))
)]
#[allow(dead_code)] // Only its attribute is used: the handler is `conversation::create_request`.
fn create_conversation_request() {}

/// The RP's API key as a bearer token.
struct RpApiKey;

impl Modify for RpApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description =
            Some("The app's API key: `Authorization: Bearer <api_key>`.".to_owned());
        components.add_security_scheme("rpApiKey", SecurityScheme::Http(bearer));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bzt scan-session broker",
        description = "The typed part of the broker's HTTP API, generated from the wire structs (crate bzt-wire). The whole wire contract is docs/protocol.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(create_session, create_conversation_request),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        Kind,
        DisplayText,
        ExpectCertInput,
        RequesterInput,
        ConversationPolicyInput,
        OpeningInput,
        SealInput,
        CreateSessionRequest,
        CreateSessionResponse,
        ConversationRequestInput,
        ConversationRequestAccepted,
    )),
    modifiers(&RpApiKey),
    tags(
        (name = "rp", description = "Relying-party backend (server to server), authenticated with the app's API key."),
        (name = "conversation", description = "Conversations (会话签章): after one scan, the requester asks for more signatures."),
    ),
)]
struct ApiDoc;

/// The document, as served and committed.
pub fn document() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    serde_json::to_value(doc).unwrap_or_default()
}

/// `GET /openapi.json`.
pub async fn serve() -> Json<serde_json::Value> {
    Json(document())
}
