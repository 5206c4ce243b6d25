//! Plain data the broker sends about a session, as the Phone API's JSON has it.
//!
//! Answers are the broker's own wire types (`bzt-wire`), which ignore unknown fields and carry
//! statuses as text, so a newer broker adding fields or values does not break an older phone.

use serde::{Deserialize, Serialize};

/// What the phone is asked to do (the seed product's "扫码" operations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// 扫码绑定: sign a challenge so the RP binds this certificate to an account.
    Bind,
    /// 扫码登录: sign a challenge to log in.
    Login,
    /// 扫码签章: sign the RP's bytes; may open a conversation.
    Sign,
    /// 生成投标文件: sign a challenge and pick the recipient certificates of a bid file.
    Encrypt,
    /// 扫码解密: re-wrap a bid file's content key to the opening hall's one-time key.
    Decrypt,
    /// A kind this phone does not know; it can only reject such a session.
    #[serde(other)]
    Unknown,
}

impl Kind {
    /// The wire name (`bind`, `login`, ...; `unknown` for [`Kind::Unknown`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bind => "bind",
            Kind::Login => "login",
            Kind::Sign => "sign",
            Kind::Encrypt => "encrypt",
            Kind::Decrypt => "decrypt",
            Kind::Unknown => "unknown",
        }
    }

    /// The known kind with this wire name.
    pub fn from_wire(s: &str) -> Option<Kind> {
        [
            Kind::Bind,
            Kind::Login,
            Kind::Sign,
            Kind::Encrypt,
            Kind::Decrypt,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The operation's name on a Chinese phone screen.
    pub fn label_zh(self) -> &'static str {
        match self {
            Kind::Bind => "扫码绑定",
            Kind::Login => "扫码登录",
            Kind::Sign => "扫码签章",
            Kind::Encrypt => "生成投标文件",
            Kind::Decrypt => "扫码解密",
            Kind::Unknown => "未知操作",
        }
    }

    /// True for kinds whose `tbs` is a `BZT-CHALLENGE-V1` text (all but `sign`).
    pub fn signs_challenge(self) -> bool {
        !matches!(self, Kind::Sign | Kind::Unknown)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session's state (the broker's wire type). Answers carry it as text (a status added later
/// does not break this phone): compare with [`SessionStatus::as_str`].
pub use bzt_wire::Status as SessionStatus;

/// What the RP asked to show on the phone (the broker's wire type: title, optional detail).
pub type SessionDisplay = bzt_wire::DisplayView;

/// The relying party's application that created the session (id, name).
pub type AppInfo = bzt_wire::AppView;

/// The end user's browser as the RP or the broker saw it (ip, user agent, origin): shown so the
/// user can spot a relay.
pub type Requester = bzt_wire::RequesterView;

/// The conversation handle the phone gets when it opened one (`kind=sign`): id, phone token
/// (kept out of `Debug`), latest end.
pub type PhoneConversation = bzt_wire::PhoneGrant;

/// The broker's answer to a successful completion or rejection: id, new status (`approved` or
/// `rejected`, as text), new version, and the conversation when the completion opened one.
pub type CompleteAnswer = bzt_wire::CompleteResponse;
