//! The reference phone client for the bzt scan-session broker, as a library.
//!
//! A phone scans a QR code, claims the session, shows the user what is asked, and approves
//! (signing with its certificate's SM2 key) or rejects. This crate does that against the Phone
//! API of docs/protocol.md and nothing else, so it doubles as an independent check of the broker. It is
//! used by the `bzt phone ...` CLI, by integration tests, and by load generators.
//!
//! ```no_run
//! # async fn demo() -> Result<(), bzt_phone::Error> {
//! use bzt_phone::{ApproveExtras, Phone, PhoneIdentity, QrText};
//!
//! let identity = PhoneIdentity::from_files("leaf.pem", "leaf.key.pem", Some("123456"))?
//!     .with_device("dev-1", "张三的手机");
//! let phone = Phone::new(reqwest::Client::new());
//! let qr = QrText::parse("http://127.0.0.1:8700/q/SESSION#SECRET")?;
//! let claimed = phone.claim(&qr, &identity).await?;
//! println!("{}", claimed.describe_zh());
//! let extras = ApproveExtras {
//!     match_code: claimed.match_choices.as_ref().map(|c| c[0].clone()),
//!     ..Default::default()
//! };
//! let done = phone.approve(&claimed, &identity, extras).await?;
//! println!("{:?} v{}", done.status, done.version);
//! # Ok(()) }
//! ```
//!
//! # Modules
//! - [`qr`]: [`QrText`], the scanned `<public_base_url>/q/<session id>#<claim secret>`.
//! - [`identity`]: [`PhoneIdentity`] (certificate, chain, SM2 key built once, device) and [`sign`].
//! - [`claim`]: [`Claimed`], the typed claim answer; its challenge check and Chinese screen text.
//! - [`challenge`]: [`Challenge`], the `BZT-CHALLENGE-V1` text, parsed and checked strictly.
//! - [`client`]: [`Phone`] with `claim`, `approve`, `reject`, `complete_raw`.
//! - [`conversation`]: [`ConversationSocket`], the phone's side of a conversation (会话签章):
//!   opened from [`CompleteAnswer::conversation`] with [`ConversationSocket::connect`], it hands
//!   out each [`SignRequest`] once (across reconnects), answers with `approve` / `reject` / `end`,
//!   and runs the whole loop with [`ConversationSocket::run`] (a decision per request) or
//!   [`ConversationSocket::run_auto_confirm`] (自动确认).
//! - [`envelope`]: bid-file encryption (多证书加密) and opening (扫码解密):
//!   [`encrypt_recipients`] (own certificate first, then colleagues'), [`decrypt_answer`] (find
//!   the phone's entry in the envelope header, unwrap the content key, re-wrap it to the hall's
//!   `reply_key`), [`Phone::approve_encrypt`], [`Phone::approve_decrypt`] (rejects with a
//!   Chinese [`DecryptRefusal::reason`] when the phone cannot decrypt).
//! - [`seals`]: 印章管理 and 扫码签章 with a GB/T 38540 seal: [`SealWallet`] (the phone's
//!   seals, the ones usable with its certificate), [`Phone::approve_with_seal`].
//! - [`session`]: plain wire data ([`Kind`], [`CompleteAnswer`], ...).
//! - [`error`]: [`Error`] and [`BrokerError`] (the protocol's `{"error": {"code", "message"}}`).
//!
//! - [`split`]: a split identity (密钥拆分): [`SplitIdentity`] (certificate plus the share
//!   masked by the PIN; no whole key), enrolment ([`Enrolled`], with a PKCS#10 request for a real
//!   CA), and [`Phone::approve_split`], [`Phone::approve_encrypt_split`],
//!   [`Phone::approve_decrypt_split`], which co-sign and co-decrypt with the co-signing service.
//!
//! Every signature is SM2 over SM3 with the distinguishing ID `1234567812345678`, DER-encoded.

pub mod challenge;
pub mod claim;
pub mod client;
pub mod conversation;
pub mod envelope;
pub mod error;
pub mod grants;
pub mod identity;
pub mod net;
pub mod qr;
pub mod seals;
pub mod session;
pub mod split;

pub use challenge::{Challenge, ChallengeError};
pub use claim::{Claimed, OpeningWindow, Token};
pub use client::{approval_body, check_approval, signed_approval_body, ApproveExtras, Phone};
pub use conversation::{
    ended_by_label_zh, Ack, AckStatus, ConversationError, ConversationSigner, ConversationSocket,
    Decision, Ended, EndedBy, FrameError, Outcome, Reconnect, RunSummary, SignRequest,
};
pub use envelope::{
    decrypt_answer, encrypt_recipients, recipients_with_own, DecryptOutcome, DecryptRefusal,
    DecryptTask,
};
pub use error::{BrokerError, Error};
pub use identity::{sign, Device, PhoneIdentity};
pub use qr::{QrError, QrText};
pub use seals::{describe_seal_zh, seal_approval_body, SealAsk, SealWallet};
pub use session::{
    AppInfo, CompleteAnswer, Kind, PhoneConversation, Requester, SessionDisplay, SessionStatus,
};
pub use split::{Enrolled, SplitIdentity, UnlockedSplit};

/// The SM2 distinguishing ID of every signature.
pub use bzt_crypto::SM2_DISTID;
