//! The demo's seal maker: the phone simulator page asks the development CA (the seal maker, 制章者,
//! in development mode) for a seal bound to its certificate, with a picture it chose or drew.

use super::DemoRp;
use crate::error::ApiError;
use crate::http::ApiJson;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use x509_cert::der::Encode;

/// Largest seal picture the demo accepts: every result and conversation answer carries it.
const MAX_PICTURE_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<Arc<DemoRp>> {
    Router::new().route("/demo/api/seals", post(make_seal))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MakeSeal {
    certificate_pem: String,
    name: String,
    /// `company` or `personal`.
    #[serde(rename = "type")]
    seal_type: String,
    picture_b64: String,
}

async fn make_seal(
    State(rp): State<Arc<DemoRp>>,
    ApiJson(req): ApiJson<MakeSeal>,
) -> Result<Json<Value>, ApiError> {
    let owner = bzt_devca::pem_certificate(&req.certificate_pem)
        .map_err(|e| ApiError::invalid(format!("`certificate_pem`: {e}")))?;
    let picture = bzt_core::codec::decode(&req.picture_b64)
        .map_err(|_| ApiError::invalid("`picture_b64` is not base64"))?;
    if !picture.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(ApiError::invalid("the seal picture must be a PNG"));
    }
    if picture.len() > MAX_PICTURE_BYTES {
        return Err(ApiError::invalid(format!(
            "the seal picture is larger than {} KiB",
            MAX_PICTURE_BYTES / 1024
        )));
    }
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid(
            "the seal's name must be 1..100 characters",
        ));
    }
    let (seal_type, mm) = match req.seal_type.as_str() {
        "company" => (bzt_seal::SealType::Company, 40),
        "personal" => (bzt_seal::SealType::Personal, 20),
        _ => return Err(ApiError::invalid("`type` must be company or personal")),
    };
    let maker = crate::dev::dev_ca(&rp.data_dir, "platform").map_err(|e| {
        tracing::error!(error = %e, "demo seal maker unavailable");
        ApiError::internal()
    })?;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let es_id = format!(
        "BZT{}",
        uuid::Uuid::new_v4().simple().to_string().to_uppercase()
    );
    let spec = bzt_seal::SealSpec {
        es_id: es_id.clone(),
        seal_type,
        name: name.to_owned(),
        owner_certs: vec![owner.to_der().map_err(|_| ApiError::internal())?],
        created: now,
        valid_start: now - time::Duration::minutes(1),
        valid_end: now + time::Duration::days(365),
        picture: bzt_seal::Picture {
            picture_type: "PNG".into(),
            data: picture,
            width_mm: mm,
            height_mm: mm,
        },
    };
    let maker_der = maker
        .certificate()
        .to_der()
        .map_err(|_| ApiError::internal())?;
    let der = bzt_seal::make_seal(&spec, &maker_der, maker.signing_key())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(Json(json!({
        "seal_b64": bzt_core::codec::encode(&der),
        "es_id": es_id,
        "name": name,
        "type": req.seal_type,
        "valid_end": bzt_core::Timestamp::from_unix_millis(spec.valid_end.unix_timestamp() * 1000),
    })))
}
