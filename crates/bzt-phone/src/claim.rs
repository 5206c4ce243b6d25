//! A claimed session: everything the broker's claim answer said, typed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, offset};
use time::OffsetDateTime;

use crate::challenge::{Challenge, ChallengeError};
use crate::session::{AppInfo, Kind, Requester, SessionDisplay};

/// A bearer token; `Debug` does not show it, so it stays out of logs.
#[derive(Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Wraps a token string.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, to send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The opening window of a `decrypt` session (开标时间), verbatim RFC 3339 UTC strings: the
/// content key may be unwrapped from `not_before` until `not_after`. A phone with a split key
/// cannot decrypt outside it (the co-signing service refuses); every phone shows it.
pub type OpeningWindow = bzt_wire::OpeningWindow;

/// A session this phone has claimed: what to show, what to sign, and how to complete it.
///
/// Made by [`crate::Phone::claim`]; completed by [`crate::Phone::approve`] or
/// [`crate::Phone::reject`].
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The broker's `public_base_url` (from the QR text): where the completion goes.
    pub base_url: String,
    /// The session id.
    pub session_id: String,
    /// What the phone is asked to do.
    pub kind: Kind,
    /// What the RP asked to show.
    pub display: SessionDisplay,
    /// The RP application.
    pub app: AppInfo,
    /// The end user's browser as seen by the RP or the broker; `None` when unknown.
    pub requester: Option<Requester>,
    /// The session's expiry, verbatim (RFC 3339 UTC with milliseconds); the challenge repeats it.
    pub expires_at: String,
    /// The trust domains the session accepts.
    pub accept: Vec<String>,
    /// The bytes to sign: a `BZT-CHALLENGE-V1` text, or the RP's bytes for `sign`.
    pub tbs: Vec<u8>,
    /// The bearer token for this session's completion.
    pub phone_token: Token,
    /// With number matching: three two-digit codes, one of them shown by the browser.
    pub match_choices: Option<Vec<String>>,
    /// `sign` only: whether the completion may open a conversation.
    pub conversation_allowed: bool,
    /// `decrypt` only: the envelope header (base64), whose SM3 the challenge carries.
    pub envelope_header_b64: Option<String>,
    /// `decrypt` only: the hall's one-time SM2 public key, hex `04||X||Y`.
    pub reply_key: Option<String>,
    /// `decrypt` only, when the hall set one: the opening window.
    pub opening: Option<OpeningWindow>,
    /// `sign` with a seal (扫码签章 with an electronic seal): what the SES_Signature must carry;
    /// complete with [`crate::Phone::approve_with_seal`].
    pub seal: Option<crate::seals::SealAsk>,
}

impl Claimed {
    /// Builds from the claim answer's JSON; says what is wrong when it cannot be used.
    pub(crate) fn from_answer(base_url: &str, answer: serde_json::Value) -> Result<Self, String> {
        let answer: bzt_wire::ClaimResponse =
            serde_json::from_value(answer).map_err(|e| format!("not a claim answer: {e}"))?;
        let tbs = STANDARD
            .decode(&answer.tbs_b64)
            .map_err(|e| format!("tbs_b64 is not base64: {e}"))?;
        let seal = answer
            .seal
            .map(crate::seals::SealAsk::from_wire)
            .transpose()?;
        let s = answer.session;
        Ok(Self {
            base_url: base_url.to_string(),
            session_id: s.id,
            kind: Kind::from_wire(&s.kind).unwrap_or(Kind::Unknown),
            display: s.display,
            app: s.app,
            requester: s.requester,
            expires_at: s.expires_at,
            accept: s.accept,
            tbs,
            phone_token: Token::new(answer.phone_token),
            match_choices: answer.match_choices,
            conversation_allowed: answer.conversation_allowed.unwrap_or(false),
            envelope_header_b64: answer.envelope_header_b64,
            reply_key: answer.reply_key,
            opening: answer.opening,
            seal,
        })
    }

    /// Parses `tbs` as a `BZT-CHALLENGE-V1` text and checks that its kind, app, session and
    /// expiry are this session's (and, for `decrypt`, that its envelope line is the SM3 of this
    /// session's envelope header). A phone must not sign a challenge that fails this: it may have
    /// been made for another session. `sign` sessions have no challenge.
    pub fn check_challenge(&self) -> Result<Challenge, ChallengeError> {
        if !self.kind.signs_challenge() {
            return Err(ChallengeError::NotAChallengeKind(self.kind));
        }
        let challenge = Challenge::parse(&self.tbs)?;
        let header = match (self.kind, &self.envelope_header_b64) {
            (Kind::Decrypt, Some(b64)) => Some(STANDARD.decode(b64).map_err(|_| {
                ChallengeError::Malformed("the claim's envelope_header_b64 is not base64".into())
            })?),
            (Kind::Decrypt, None) => {
                return Err(ChallengeError::Malformed(
                    "a decrypt claim without envelope_header_b64".into(),
                ))
            }
            _ => None,
        };
        challenge.check(
            self.kind,
            &self.app.id,
            &self.session_id,
            &self.expires_at,
            header.as_deref(),
        )?;
        Ok(challenge)
    }

    /// The session's expiry, parsed; `None` when the broker sent something that is not RFC 3339.
    pub fn expires_at_time(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.expires_at, &Rfc3339).ok()
    }

    /// The text a phone screen shows before the user confirms, in Chinese, one item a line:
    /// app, 操作, 标题, 详情, 请求方 IP, 来源, 浏览器, number-match prompt, sign details, 有效期至
    /// (Beijing time). Text from the broker is cleaned of control and bidi-override characters, so
    /// a title cannot forge extra lines.
    pub fn describe_zh(&self) -> String {
        let unknown = "未知".to_string();
        let requester = self.requester.clone().unwrap_or_default();
        let mut lines = vec![
            format!("{} 请求{}", clean(&self.app.name), self.kind.label_zh()),
            format!("操作：{}", self.kind.label_zh()),
            format!("标题：{}", clean(&self.display.title)),
        ];
        if let Some(detail) = self.display.detail.as_deref().filter(|d| !d.is_empty()) {
            lines.push(format!("详情：{}", clean(detail)));
        }
        lines.push(format!(
            "请求方 IP：{}",
            requester
                .ip
                .as_deref()
                .map(clean)
                .unwrap_or_else(|| unknown.clone())
        ));
        lines.push(format!(
            "来源：{}",
            requester
                .origin
                .as_deref()
                .map(clean)
                .unwrap_or_else(|| unknown.clone())
        ));
        if let Some(ua) = requester.user_agent.as_deref() {
            lines.push(format!("浏览器：{}", clean(ua)));
        }
        if let Some(choices) = &self.match_choices {
            let choices: Vec<String> = choices.iter().map(|c| clean(c)).collect();
            lines.push(format!(
                "核对数字：请选择电脑屏幕上显示的数字（{}）",
                choices.join(" / ")
            ));
        }
        match self.kind {
            Kind::Sign if self.seal.is_some() => {
                lines.push("签章方式：电子印章（请选择印章）".into());
                if self.conversation_allowed {
                    lines.push("会话签章：可开启（之后的签章请求将自动确认）".into());
                }
            }
            Kind::Sign => {
                lines.push(format!("签章内容：{} 字节", self.tbs.len()));
                if self.conversation_allowed {
                    lines.push("会话签章：可开启（之后的签章请求将自动确认）".into());
                }
            }
            Kind::Unknown => lines.push("此版本不支持该操作，只能拒绝".into()),
            _ => {}
        }
        if let Some(o) = &self.opening {
            lines.push(format!(
                "开标时间：{} 至 {}",
                beijing_time(&o.not_before),
                beijing_time(&o.not_after)
            ));
        }
        lines.push(format!("有效期至：{}", beijing_time(&self.expires_at)));
        lines.join("\n")
    }
}

/// An RFC 3339 time from the broker as Beijing time for the screen; cleaned verbatim when
/// it does not parse.
fn beijing_time(rfc3339: &str) -> String {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|t| {
            t.to_offset(offset!(+8))
                .format(format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second]"
                ))
                .ok()
        })
        .map(|t| format!("{t}（北京时间）"))
        .unwrap_or_else(|| clean(rfc3339))
}

/// Replaces control characters (line breaks included) and bidirectional-override characters
/// with a space, so broker-supplied text cannot forge lines or reorder what the user reads.
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi {
                ' '
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(kind: Kind, tbs: &[u8]) -> Claimed {
        Claimed {
            base_url: "http://127.0.0.1:8700".into(),
            session_id: "s1".into(),
            kind,
            display: SessionDisplay {
                title: "登录 示例交易平台".into(),
                detail: Some("投标人登录".into()),
            },
            app: AppInfo {
                id: "demo".into(),
                name: "示例交易平台".into(),
            },
            requester: Some(Requester {
                ip: Some("203.0.113.7".into()),
                user_agent: Some("Mozilla/5.0".into()),
                origin: Some("https://bid.example.cn".into()),
            }),
            expires_at: "2026-11-23T15:43:02.123Z".into(),
            accept: vec!["platform".into()],
            tbs: tbs.to_vec(),
            phone_token: Token::new("t"),
            match_choices: None,
            conversation_allowed: false,
            envelope_header_b64: None,
            reply_key: None,
            opening: None,
            seal: None,
        }
    }

    fn challenge(session: &str) -> String {
        format!(
            "BZT-CHALLENGE-V1\nkind:login\napp:demo\nsession:{session}\nnonce:AAECAwQFBgcICQoLDA0ODw\nexpires:2026-11-23T15:43:02.123Z"
        )
    }

    #[test]
    fn check_challenge_accepts_its_own_session() {
        let c = claimed(Kind::Login, challenge("s1").as_bytes());
        let parsed = c.check_challenge().unwrap();
        assert_eq!(parsed.session, "s1");
    }

    #[test]
    fn check_challenge_refuses_another_session() {
        let c = claimed(Kind::Login, challenge("s2").as_bytes());
        match c.check_challenge() {
            Err(ChallengeError::Mismatch {
                field,
                expected,
                found,
            }) => {
                assert_eq!(field, "session");
                assert_eq!(expected, "s1");
                assert_eq!(found, "s2");
            }
            other => panic!("expected a session mismatch, got {other:?}"),
        }
    }

    #[test]
    fn check_challenge_refuses_sign_sessions_and_bad_decrypt_claims() {
        let c = claimed(Kind::Sign, b"any bytes");
        assert_eq!(
            c.check_challenge(),
            Err(ChallengeError::NotAChallengeKind(Kind::Sign))
        );
        let text = format!(
            "{}\nenvelope:{}",
            challenge("s1").replace("kind:login", "kind:decrypt"),
            hex::encode(crate::challenge::envelope_hash(b"{\"v\":1}"))
        );
        let mut c = claimed(Kind::Decrypt, text.as_bytes());
        assert!(
            c.check_challenge().is_err(),
            "no envelope header in the claim"
        );
        c.envelope_header_b64 = Some(STANDARD.encode(b"{\"v\":1}"));
        c.check_challenge().unwrap();
        c.envelope_header_b64 = Some(STANDARD.encode(b"{\"v\":2}"));
        assert!(matches!(
            c.check_challenge(),
            Err(ChallengeError::Mismatch {
                field: "envelope",
                ..
            })
        ));
    }

    #[test]
    fn describe_zh_shows_what_the_user_must_see() {
        let mut c = claimed(Kind::Login, challenge("s1").as_bytes());
        c.match_choices = Some(vec!["12".into(), "34".into(), "56".into()]);
        let text = c.describe_zh();
        assert_eq!(
            text,
            "示例交易平台 请求扫码登录\n\
             操作：扫码登录\n\
             标题：登录 示例交易平台\n\
             详情：投标人登录\n\
             请求方 IP：203.0.113.7\n\
             来源：https://bid.example.cn\n\
             浏览器：Mozilla/5.0\n\
             核对数字：请选择电脑屏幕上显示的数字（12 / 34 / 56）\n\
             有效期至：2026-11-23 23:43:02（北京时间）"
        );
        c.display.title = "登录\n操作：扫码解密\u{202e}".into();
        c.requester = None;
        let text = c.describe_zh();
        assert!(text.contains("标题：登录 操作：扫码解密 \n"), "{text}");
        assert!(text.contains("请求方 IP：未知\n来源：未知\n"), "{text}");
        for (kind, label) in [
            (Kind::Bind, "扫码绑定"),
            (Kind::Sign, "扫码签章"),
            (Kind::Encrypt, "生成投标文件"),
            (Kind::Decrypt, "扫码解密"),
        ] {
            let text = claimed(kind, b"x").describe_zh();
            assert!(text.contains(&format!("操作：{label}")), "{text}");
        }
    }
}
