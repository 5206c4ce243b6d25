//! The broker's wire messages (docs/protocol.md), typed once and shared by the
//! broker (which reads requests and writes answers with them) and its clients.
//!
//! - Requests are strict (`deny_unknown_fields`): an unknown field answers
//!   `400 invalid_request`, as the protocol says. An optional field sent as
//!   `null` is absent.
//! - Answers are lenient: a client reading them ignores fields it does not
//!   know, so a newer broker does not break an older client.
//!
//! Each type derives its OpenAPI schema ([`utoipa::ToSchema`]); the broker's
//! generated document (`GET /openapi.json`, committed as `docs/openapi.json`)
//! is built from them and from the handlers' own annotations, so the document
//! is the code.
//!
//! Field values are checked by the broker's domain rules (lengths, ranges,
//! which fields a kind needs), not here: this crate is the shape only, and
//! the schemas state the bounds those rules enforce.
//!
//! One module per area: [`session`] (the RP's create and session view),
//! [`browser`] (the page's push frames), [`phone`] (claim and complete),
//! [`conversation`] (会话签章: requests, views, both sockets' frames),
//! [`ops`] (health, readiness, revocations), [`cosign`] (key
//! splitting), [`common`] (certificates, seals, delegates), [`error`].
//! The audit record (`GET /v1/audit`) is not here: it is
//! `bzt_core::audit::Record`, the type the log hashes and chains, whose schema
//! bzt-core derives behind its `openapi` feature (a copy here could drift
//! from the bytes that are hashed, and bzt-core depends on this crate).

pub mod browser;
pub mod common;
pub mod conversation;
pub mod cosign;
pub mod error;
pub mod ops;
pub mod phone;
pub mod session;

pub use browser::{BrowserFrame, BrowserMessage, QrFrame, ResultFrame, StatusFrame};
pub use common::{
    CertificateInfo, Delegate, OpeningWindow, SealAsk, SealPicture, SealResult, SerialAnswer,
};
pub use conversation::{
    Ack, ConversationCertificate, ConversationRequestAccepted, ConversationRequestInput,
    ConversationRequestView, ConversationStatus, ConversationView, Ended, EndedBy, FrameError,
    PhoneMessage, PhoneServerFrame, RequestStatus, RequesterFrame, SignRequestFrame,
};
pub use cosign::{
    ConversationContextAsk, CosignContext, CosignContextRequest, KeyActionRequest, ServiceAnswer,
    SessionContextAsk,
};
pub use error::{ErrorBody, ErrorDetail};
pub use ops::{Health, Ready, RevocationList, RevocationRecordView, RevokeRequest};
pub use phone::{
    AppView, ClaimDevice, ClaimRequest, ClaimResponse, ClaimedSession, CompleteRequest,
    CompleteResponse, PhoneGrant, Rejection, RequesterView,
};
pub use session::{
    ApprovedResult, ConversationPolicyInput, CreateSessionRequest, CreateSessionResponse,
    DeviceView, DisplayText, DisplayView, ExpectCertInput, Kind, OpeningInput, ReasonResult,
    RequesterGrant, RequesterInput, SealInput, SessionResult, SessionView, Status,
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_session_result_is_absent_null_or_an_outcome() {
        let mut view: SessionView = serde_json::from_value(json!({
            "id": "a", "kind": "login", "status": "pending", "version": 1,
            "display": { "title": "t" }, "created_at": "c", "expires_at": "e"
        }))
        .unwrap();
        assert_eq!(view.result, None);
        assert!(serde_json::to_value(&view).unwrap().get("result").is_none());

        view.result = Some(None);
        assert_eq!(serde_json::to_value(&view).unwrap()["result"], json!(null));
        let back: SessionView =
            serde_json::from_value(serde_json::to_value(&view).unwrap()).unwrap();
        assert_eq!(back.result, Some(None), "null is kept apart from absent");

        view.result = Some(Some(SessionResult::Reason(ReasonResult {
            reason: "match_failed".into(),
        })));
        let back: SessionView =
            serde_json::from_value(serde_json::to_value(&view).unwrap()).unwrap();
        assert_eq!(back.result, view.result);
    }

    #[test]
    fn frames_carry_their_type() {
        let frame = BrowserFrame::Qr(QrFrame {
            qr_text: "q".into(),
            version: 1,
            seq: 2,
        });
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            json!({ "type": "qr", "qr_text": "q", "version": 1, "seq": 2 })
        );
        let ack = PhoneServerFrame::Ack(Ack {
            request_id: "r".into(),
            status: "approved".into(),
        });
        assert_eq!(
            serde_json::to_value(&ack).unwrap(),
            json!({ "type": "ack", "request_id": "r", "status": "approved" })
        );
    }

    #[test]
    fn phone_messages_are_strict_and_answers_lenient() {
        let end: PhoneMessage = serde_json::from_value(json!({ "type": "end" })).unwrap();
        assert_eq!(end, PhoneMessage::End);
        let e = serde_json::from_value::<PhoneMessage>(
            json!({ "type": "sign_reject", "request_id": "r", "reason": "no", "extra": 1 }),
        )
        .unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        let e = serde_json::from_value::<CompleteRequest>(
            json!({ "certificate_pem": "p", "colour": 1 }),
        )
        .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let answer: CompleteResponse = serde_json::from_value(
            json!({ "id": "s", "status": "approved", "version": 3, "added_later": [] }),
        )
        .unwrap();
        assert_eq!(answer.version, 3);
    }

    #[test]
    fn an_ended_frame_reads_with_a_new_cause_and_without_at() {
        let frame: PhoneServerFrame =
            serde_json::from_value(json!({ "type": "ended", "by": "meteor" })).unwrap();
        assert_eq!(
            frame,
            PhoneServerFrame::Ended(Ended {
                by: "meteor".into(),
                at: None
            })
        );
    }

    #[test]
    fn a_phone_grant_keeps_its_token_out_of_debug() {
        let grant = PhoneGrant {
            id: "c".into(),
            phone_token: "secret-token".into(),
            expires_at: "e".into(),
        };
        assert!(!format!("{grant:?}").contains("secret-token"));
        assert_eq!(
            serde_json::to_value(&grant).unwrap()["phone_token"],
            "secret-token"
        );
    }
}
