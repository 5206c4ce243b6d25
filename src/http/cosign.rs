//! Key splitting on the broker: the context endpoint the co-signing service
//! calls (its own credential), and the admin routes that drive the service's
//! freeze / unfreeze / revoke / unlock for the app owner (admin token), and
//! the platform operator's view and reclaim of company-certificate grants
//! (企业证书授权).

use super::ops::{audit_then_revoke, authorize_admin};
use super::{bearer, ApiJson, AppState};
use crate::broker::cosigner::{ContextRequest, CosignerAdmin, KeyAction};
use crate::broker::revocations::{RevocationRecord, Revocations};
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::Json;
use bzt_core::Secret;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// `POST /v1/cosign/context`: the bytes the phone is answering, for the
/// co-signing service only.
pub async fn context(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ContextRequest>,
) -> Result<Json<Value>, ApiError> {
    let expected = state.cosigner_credential.ok_or_else(|| {
        ApiError::forbidden(
            "key splitting is not configured on this broker: set [cosigner] credential",
        )
    })?;
    let presented = bearer(&headers)
        .and_then(Secret::from_presented)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "send the co-signing service's credential as `Authorization: Bearer <credential>`",
            )
        })?;
    if !expected.verify(&presented) {
        return Err(ApiError::unauthorized(
            "the co-signing service's credential is not valid",
        ));
    }
    let context = state.broker.cosign_context(body).await?;
    Ok(Json(json!(context)))
}

fn admin_client(state: &AppState) -> Result<Arc<CosignerAdmin>, ApiError> {
    state.cosigner_admin.clone().ok_or_else(|| {
        ApiError::forbidden("no co-signing service is configured: set [cosigner] url")
    })
}

/// `GET /v1/admin/cosigner/keys/{key_id}`: the key's state at the service.
pub async fn admin_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    Ok(Json(admin_client(&state)?.key(&key_id).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    /// The split certificate's serial, which the broker adds to its own
    /// revocations on `revoke` (the service knows keys, not certificates).
    certificate_serial: Option<String>,
}

/// `POST /v1/admin/cosigner/keys/{key_id}/{freeze|unfreeze|revoke|unlock}`.
/// Revoking (注销) first records the certificate's serial in the broker's
/// revocations, so the broker refuses it even if the service call fails.
pub async fn admin_action(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((key_id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let action = KeyAction::parse(&action).ok_or_else(|| {
        ApiError::not_found("no such action: use freeze, unfreeze, revoke or unlock")
    })?;
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?
    };
    let admin = admin_client(&state)?;
    let mut revoked_serial = None;
    if action == KeyAction::Revoke && is_granted_key(&admin, &key_id).await {
        // A member's granted key (企业证书授权): 注销 reclaims the grant at the service; the
        // company certificate stays good for its administrator and other members, so it is
        // not added to the revocations.
        if body.certificate_serial.is_some() {
            return Err(ApiError::invalid(
                "this key is a member's grant of a company certificate: revoking it reclaims the grant and revokes no certificate; send no `certificate_serial`",
            ));
        }
    } else if action == KeyAction::Revoke {
        let serial = match body.certificate_serial {
            Some(s) => s,
            None => admin.key(&key_id).await?["certificate_serial"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "send `certificate_serial`: the co-signing service does not know this key's certificate",
                    )
                })?,
        };
        let record = RevocationRecord {
            serial: Revocations::normalize(&serial).map_err(ApiError::invalid)?,
            revoked_at: state.broker.now(),
            revoked_by: Some("admin API (注销 of a split key)".into()),
            reason: Some(format!(
                "split key {key_id} revoked at the co-signing service"
            )),
        };
        audit_then_revoke(&state, &headers, peer, &record).await?;
        tracing::warn!(serial = %record.serial, key_id = %key_id, "split certificate revoked at the broker");
        revoked_serial = Some(record.serial);
    } else if body.certificate_serial.is_some() {
        return Err(ApiError::invalid(
            "`certificate_serial` is only taken by `revoke`",
        ));
    }
    let mut answer = admin.act(&key_id, action).await?;
    tracing::warn!(key_id = %key_id, action = action.as_str(), "split key state changed at the co-signing service");
    if let (Some(serial), Some(obj)) = (revoked_serial, answer.as_object_mut()) {
        obj.insert("revoked_serial".into(), json!(serial));
    }
    Ok(Json(answer))
}

/// Whether `key_id` is a member's key of a grant at the service (a grant's key id is its grant id).
/// A service that cannot say counts as "no": 注销 then revokes the certificate named, as it
/// always did, whatever the service answers.
async fn is_granted_key(admin: &CosignerAdmin, key_id: &str) -> bool {
    match admin.grants().await {
        Ok(listed) => listed["grants"]
            .as_array()
            .is_some_and(|grants| grants.iter().any(|g| g["grant_id"] == key_id)),
        Err(e) => {
            tracing::warn!(error = %e.message, key_id, "could not ask the co-signing service whether this key is a grant");
            false
        }
    }
}

/// `GET /v1/admin/cosigner/grants`: every grant of a company certificate at
/// the service, and the 证书收回记录 (the operator's view).
pub async fn admin_grants(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    Ok(Json(admin_client(&state)?.grants().await?))
}

/// `POST /v1/admin/cosigner/grants/{grant_id}/reclaim`: the platform
/// operator takes a grant back; the service records the operator as actor.
pub async fn admin_reclaim(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(grant_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    let answer = admin_client(&state)?.reclaim(&grant_id).await?;
    tracing::warn!(grant_id = %grant_id, "company certificate grant reclaimed by the operator");
    Ok(Json(answer))
}
