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
//! [`audit`], [`ops`] (health, readiness, revocations), [`cosign`] (key
//! splitting), [`common`] (certificates, seals, delegates), [`error`].

pub mod audit;
pub mod browser;
pub mod common;
pub mod conversation;
pub mod cosign;
pub mod error;
pub mod ops;
pub mod phone;
pub mod session;

pub use audit::{AuditList, AuditRecord};
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
