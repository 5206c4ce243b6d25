//! The bid tool's OFD with a seal signature (扫码签章 into an OFD document), as a relying party's
//! backend does it: lay out a one-page OFD and its `Signature.xml`, ask for a seal over the SM3 of
//! `Signature.xml` (here in a conversation the tool holds), then fetch the answer from the broker
//! with the API key, verify the `SES_Signature` itself (the broker's check is no substitute) and
//! write it into the document as `SignedValue.dat`.

use super::DemoRp;
use crate::error::ApiError;
use crate::http::ApiJson;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bzt_core::ErrorCode;
use bzt_seal::ofd::{OnePageOfd, StampBox, PROPERTY_INFO};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Documents kept at once, and for how long (a demo, in memory).
const MAX_DOCUMENTS: usize = 64;
const KEEP_FOR: Duration = Duration::from_secs(30 * 60);
const MAX_LINES: usize = 30;
const MAX_LINE_CHARS: usize = 120;

/// Where the seal goes: on the 投标人（盖章） line of the demo's page, 40 mm square.
const STAMP: StampBox = StampBox {
    x_mm: 110.0,
    y_mm: 75.0,
    width_mm: 40.0,
    height_mm: 40.0,
};

enum Document {
    Waiting(OnePageOfd),
    Sealed(Vec<u8>),
}

/// The documents of the bid tool, by id.
#[derive(Default)]
pub struct Documents(Mutex<HashMap<String, (Instant, Document)>>);

impl Documents {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Document)>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn routes() -> Router<Arc<DemoRp>> {
    Router::new()
        .route("/demo/api/ofd", post(create))
        .route("/demo/api/ofd/{id}/seal", post(seal))
        .route("/demo/api/ofd/{id}/file", get(file))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDocument {
    title: String,
    lines: Vec<String>,
}

/// `POST /demo/api/ofd {title, lines}` → `{id, data_hash_b64, property_info}`: what the seal
/// request must ask for.
async fn create(
    State(rp): State<Arc<DemoRp>>,
    ApiJson(req): ApiJson<NewDocument>,
) -> Result<Json<Value>, ApiError> {
    let too_long = |s: &str| s.chars().count() > MAX_LINE_CHARS;
    if req.title.trim().is_empty()
        || too_long(&req.title)
        || req.lines.len() > MAX_LINES
        || req.lines.iter().any(|l| too_long(l))
    {
        return Err(ApiError::invalid(format!(
            "`title` (not empty) and at most {MAX_LINES} `lines`, each at most {MAX_LINE_CHARS} characters"
        )));
    }
    let lines: Vec<&str> = req.lines.iter().map(String::as_str).collect();
    let doc = OnePageOfd::new(&req.title, &lines, STAMP, OffsetDateTime::now_utc());
    let data_hash = doc.data_hash();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut docs = rp.ofds.lock();
    docs.retain(|_, (at, _)| at.elapsed() < KEEP_FOR);
    if docs.len() >= MAX_DOCUMENTS {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "the demo keeps a few OFD documents at a time; try again later",
        ));
    }
    docs.insert(id.clone(), (Instant::now(), Document::Waiting(doc)));
    Ok(Json(json!({
        "id": id,
        "data_hash_b64": bzt_core::codec::encode(&data_hash),
        "property_info": PROPERTY_INFO,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SealAnswer {
    conversation_id: String,
    request_id: String,
}

/// `POST /demo/api/ofd/{id}/seal {conversation_id, request_id}`: fetches the approved seal request
/// from the broker, verifies its `SES_Signature` for this document with the trusted seal makers,
/// and writes it into the OFD. Answers what was verified.
async fn seal(
    State(rp): State<Arc<DemoRp>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SealAnswer>,
) -> Result<Json<Value>, ApiError> {
    let data_hash = match rp.ofds.lock().get(&id) {
        Some((_, Document::Waiting(doc))) => doc.data_hash(),
        Some((_, Document::Sealed(_))) => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this document is sealed already",
            ))
        }
        None => return Err(ApiError::not_found("no such document (kept 30 minutes)")),
    };
    let answer = rp
        .broker
        .get_conversation_request(&req.conversation_id, &req.request_id, None)
        .await
        .map_err(super::broker_error)?;
    if answer.status != "approved" {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "the seal request is not approved",
        ));
    }
    let der = answer
        .seal_signature_b64
        .as_deref()
        .and_then(|b| bzt_core::codec::decode(b).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadSignature,
                "the answer carries no seal signature",
            )
        })?;
    let bad = |e: bzt_seal::SealError| ApiError::new(ErrorCode::BadSignature, e.to_string());
    let sig = bzt_seal::SealSignature::from_der(&der).map_err(bad)?;
    let verified =
        bzt_seal::verify_signature(&sig, &rp.seal_makers, &data_hash, OffsetDateTime::now_utc())
            .map_err(bad)?;
    if sig.property_info() != PROPERTY_INFO {
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            format!("TBS_Sign.propertyInfo is not {PROPERTY_INFO}"),
        ));
    }
    let mut docs = rp.ofds.lock();
    let Some((at, Document::Waiting(doc))) = docs.remove(&id) else {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this document was sealed meanwhile",
        ));
    };
    docs.insert(id.clone(), (at, Document::Sealed(doc.finish(&der))));
    let seal = sig.seal();
    Ok(Json(json!({
        "verified": true,
        "seal": {
            "name": seal.name(),
            "es_id": seal.es_id(),
            "type": seal.seal_type().map(|t| t.as_str()).unwrap_or("other"),
        },
        "signer": bzt_core::pki::name_string(verified.signer.tbs_certificate().subject()),
        "maker": bzt_core::pki::name_string(verified.maker.tbs_certificate().subject()),
        "time_info": verified.time_info.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "property_info": PROPERTY_INFO,
        "file_url": format!("/demo/api/ofd/{id}/file"),
    })))
}

/// `GET /demo/api/ofd/{id}/file`: the sealed OFD.
async fn file(State(rp): State<Arc<DemoRp>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match rp.ofds.lock().get(&id) {
        Some((_, Document::Sealed(bytes))) => Ok((
            [
                (header::CONTENT_TYPE, "application/ofd"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"bid.ofd\"; filename*=UTF-8''%E6%8A%95%E6%A0%87%E5%87%BD.ofd",
                ),
            ],
            bytes.clone(),
        )
            .into_response()),
        Some(_) => Err(ApiError::new(
            ErrorCode::Conflict,
            "the document has no seal signature yet",
        )),
        None => Err(ApiError::not_found("no such document (kept 30 minutes)")),
    }
}
