//! Key splitting on the broker: the context endpoint the co-signing service
//! calls (its own credential), and the admin routes that drive the service's
//! freeze / unfreeze / revoke / unlock for the app owner (admin token), and
//! the platform operator's view and reclaim of company-certificate grants
//! (企业证书授权).

use super::ops::{audit_then_revoke, authorize_admin};
use super::{answers, bearer, ApiJson, AppState};
use crate::broker::cosigner::{CosignerAdmin, KeyAction};
use crate::broker::revocations::{RevocationRecord, Revocations};
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::Json;
use bzt_core::Secret;
use bzt_wire::{CosignContext, CosignContextRequest, ErrorBody, KeyActionRequest, ServiceAnswer};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;

/// `POST /v1/cosign/context`: the bytes the phone is answering, for the
/// co-signing service only. Answers only while the session is `scanned` by
/// that phone token and not expired (or the conversation request is
/// pending); otherwise the error the phone itself would get. `delegate` is
/// noted on the session (or request) and shown as its `delegate`.
#[utoipa::path(
    post,
    path = "/v1/cosign/context",
    tag = "cosign",
    operation_id = "cosignContext",
    summary = "The bytes a co-signing service may co-sign (content binding).",
    request_body = CosignContextRequest,
    responses(
        (status = 200, description = "The context.", body = CosignContext),
        (status = 400, response = answers::BadRequest),
        (status = 401, description = "`unauthorized`: the service's credential, or the relayed phone token, is missing or wrong.", body = ErrorBody),
        (status = 403, description = "`forbidden`: key splitting is not configured on this broker (`[cosigner] credential`).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such session, conversation or request.", body = ErrorBody),
        (status = 409, description = "`conflict`: the session is terminal, or the request already answered.", body = ErrorBody),
        (status = 410, description = "`expired`: the session or request expired.", body = ErrorBody),
        (status = 413, response = answers::PayloadTooLarge),
        (status = 503, response = answers::Unavailable),
    ),
    security(("cosignerCredential" = []))
)]
pub async fn context(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CosignContextRequest>,
) -> Result<Json<CosignContext>, ApiError> {
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
    let context = state.broker.cosign_context(body.into()).await?;
    Ok(Json(context.into()))
}

fn admin_client(state: &AppState) -> Result<Arc<CosignerAdmin>, ApiError> {
    state.cosigner_admin.clone().ok_or_else(|| {
        ApiError::forbidden("no co-signing service is configured: set [cosigner] url")
    })
}

/// `GET /v1/admin/cosigner/keys/{key_id}`: the key's state at the service.
#[utoipa::path(
    get,
    path = "/v1/admin/cosigner/keys/{key_id}",
    tag = "admin",
    operation_id = "getCosignerKey",
    summary = "A split key's state at the co-signing service.",
    description = "Relays `GET /v1/admin/keys/{key_id}` of the service configured in `[cosigner] url`, with `[cosigner] admin_token`; the service's answer as it gave it.",
    params(("key_id" = String, Path, description = "The split key's id at the co-signing service (`[A-Za-z0-9_-]`, up to 128 characters).")),
    responses(
        (status = 200, description = "The service's view of the key.", body = ServiceAnswer),
        (status = 404, description = "`not_found`: the service knows no such key.", body = ErrorBody),
        answers::CosignerAdminRefusals,
    ),
    security(("adminToken" = []))
)]
pub async fn admin_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    Ok(Json(admin_client(&state)?.key(&key_id).await?))
}

/// `POST /v1/admin/cosigner/keys/{key_id}/{freeze|unfreeze|revoke|unlock}`.
/// Revoking (注销) first records the certificate's serial in the broker's
/// revocations, so the broker refuses it even if the service call fails.
#[utoipa::path(
    post,
    path = "/v1/admin/cosigner/keys/{key_id}/{action}",
    tag = "admin",
    operation_id = "actOnCosignerKey",
    summary = "Freeze, unfreeze, revoke or unlock a split key at the co-signing service.",
    description = "Relays `POST /v1/admin/keys/{key_id}/{action}` to the service. `revoke` first adds the split certificate's serial to the broker's run-time revocations (from `certificate_serial`, else from the service's key record), so the broker refuses the certificate even if the service call then fails; the answer then carries `revoked_serial`. For a member's granted key (its key id is the grant id) `revoke` reclaims the grant and revokes no certificate. For an administrator's key, `freeze` suspends the grants it made (the members' co-signing answers `frozen` until `unfreeze`) and `revoke` reclaims them (reclaim records with reason `lender_revoked`); see docs/key-splitting.md.",
    params(
        ("key_id" = String, Path, description = "The split key's id at the co-signing service (`[A-Za-z0-9_-]`, up to 128 characters)."),
        ("action" = String, Path, description = "`freeze` (挂失), `unfreeze`, `revoke` (注销: the server share is destroyed for good), `unlock` (after five wrong PIN proofs in a row)."),
    ),
    request_body(content = Option<KeyActionRequest>, description = "Optional; `revoke` only.", content_type = "application/json"),
    responses(
        (status = 200, description = "The service's answer (the key's new state), plus `revoked_serial` for `revoke`.", body = ServiceAnswer),
        (status = 400, response = answers::BadRequest),
        (status = 404, description = "`not_found`: no such action, or the service knows no such key.", body = ErrorBody),
        (status = 409, description = "`conflict`: the service refused the change in the key's state (e.g. already revoked).", body = ErrorBody),
        answers::CosignerAdminRefusals,
    ),
    security(("adminToken" = []))
)]
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
    let body: KeyActionRequest = if body.iter().all(u8::is_ascii_whitespace) {
        KeyActionRequest::default()
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
        obj.insert("revoked_serial".into(), Value::String(serial));
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
#[utoipa::path(
    get,
    path = "/v1/admin/cosigner/grants",
    tag = "admin",
    operation_id = "listCosignerGrants",
    summary = "Every company-certificate grant at the co-signing service, and the reclaim records (证书收回记录).",
    description = "Relays `GET /v1/admin/grants` of the service with `[cosigner] admin_token`; the service's answer as it gave it, `{\"grants\", \"reclaims\"}`; a grant whose administrator's key is frozen or revoked carries `lender_state` (docs/key-splitting.md).",
    responses(
        (status = 200, description = "`{\"grants\": [...], \"reclaims\": [...]}`.", body = ServiceAnswer),
        answers::CosignerAdminRefusals,
    ),
    security(("adminToken" = []))
)]
pub async fn admin_grants(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&state, &headers)?;
    Ok(Json(admin_client(&state)?.grants().await?))
}

/// `POST /v1/admin/cosigner/grants/{grant_id}/reclaim`: the platform
/// operator takes a grant back; the service records the operator as actor.
#[utoipa::path(
    post,
    path = "/v1/admin/cosigner/grants/{grant_id}/reclaim",
    tag = "admin",
    operation_id = "reclaimCosignerGrant",
    summary = "The platform operator takes a company-certificate grant back (收回).",
    description = "Relays `POST /v1/admin/grants/{grant_id}/reclaim` to the service, which destroys the member's server share and writes one reclaim record with actor `operator`. The answer is the service's `{\"grant\", \"grants\", \"reclaims\"}`.",
    params(("grant_id" = String, Path, pattern = "^[A-Za-z0-9_-]{1,128}$", description = "The grant's id at the co-signing service.")),
    responses(
        (status = 200, description = "The grant, now `reclaimed`, with every grant and reclaim record.", body = ServiceAnswer),
        (status = 404, description = "`not_found`: the service knows no such grant.", body = ErrorBody),
        (status = 410, description = "`expired`: the grant was reclaimed already (by its administrator, the operator or its end time).", body = ErrorBody),
        answers::CosignerAdminRefusals,
    ),
    security(("adminToken" = []))
)]
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
