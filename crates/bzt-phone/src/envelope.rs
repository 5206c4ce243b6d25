//! The phone's part in bid-file encryption: choosing who may open a bid file (`encrypt`,
//! 多证书加密) and handing its content key to the opening hall (`decrypt`, 扫码解密).
//!
//! # `decrypt`
//! The claim carries the envelope header (`envelope_header_b64`) and the hall's one-time SM2
//! public key (`reply_key`). [`decrypt_answer`]:
//! 1. checks the challenge, including that its `envelope:` line is the SM3 of exactly these
//!    header bytes (so the signature approves this file and no other);
//! 2. finds the phone's own entry in the header by its certificate's serial and issuer;
//! 3. SM2-decrypts the content key with the certificate's private key;
//! 4. SM2-encrypts it to `reply_key` (GM/T 0009 DER) and returns that, base64.
//!
//! The broker only ever sees the re-wrapped key: the content key exists in clear on the phone
//! (here, for the length of one call, wiped on drop) and at the hall.
//!
//! When the phone cannot do this, a [`DecryptRefusal`] says why in Chinese, in words the hall
//! can show ([`DecryptRefusal::reason`]); [`Phone::approve_decrypt`] then rejects the session
//! with that reason, so the hall learns it (`result.reason`) instead of waiting for expiry.
//!
//! # `encrypt`
//! The completion names the certificates the bid file will be sealed to. [`encrypt_recipients`]
//! puts the phone's own certificate first (so its holder can always open what they sealed),
//! then the colleagues' certificates, each checked to carry an SM2 key and listed once.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bzt_envelope::{parse_reply_key, unwrap_key, wrap_key, Header, Recipient};
use sm2::SecretKey;

use crate::challenge::ChallengeError;
use crate::claim::Claimed;
use crate::client::{ApproveExtras, Phone};
use crate::error::Error;
use crate::identity::PhoneIdentity;
use crate::session::{CompleteAnswer, Kind};

/// Most recipients an `encrypt` completion may carry (PROTOCOL: 1..50).
pub const MAX_RECIPIENTS: usize = 50;

/// Longest `reject.reason` the broker keeps (docs/protocol.md: 1..500 characters).
const MAX_REASON_CHARS: usize = 500;

/// Why a phone will not hand over a bid file's content key. [`DecryptRefusal::reason`] is the
/// Chinese text for the hall (and the session's `result.reason`); `Display` shows the same.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecryptRefusal {
    /// The session is not a `decrypt` session.
    NotDecrypt(Kind),
    /// The claim answer has no `envelope_header_b64`, or it is not base64.
    NoEnvelope,
    /// The challenge is not this session's, or its `envelope:` line is not the SM3 of the
    /// header the claim carries: signing it could approve another file.
    Challenge(ChallengeError),
    /// The envelope header does not parse (or is of a version this phone does not read).
    BadEnvelope(String),
    /// The phone's certificate has no entry in the header.
    NotARecipient {
        /// The phone's certificate serial (lowercase hex).
        own_serial: String,
        /// `(serial, issuer)` of every recipient, in header order.
        recipients: Vec<(String, String)>,
    },
    /// The private key does not belong to the phone's certificate.
    KeyMismatch,
    /// The phone's entry did not decrypt to a 16-byte key (damaged file or wrong key).
    UnwrapFailed,
    /// The claim's `reply_key` is missing or not an uncompressed SM2 point.
    BadReplyKey(String),
    /// SM2 encryption to the reply key failed (system random generator).
    Crypto,
}

impl DecryptRefusal {
    /// The reason to show at the hall, in Chinese, at most 500 characters (what the broker
    /// keeps of a rejection reason).
    pub fn reason(&self) -> String {
        let text = match self {
            Self::NotDecrypt(kind) => format!("该请求不是扫码解密（{}）", kind.label_zh()),
            Self::NoEnvelope => "解密请求缺少投标文件信封头，无法解密".into(),
            Self::Challenge(ChallengeError::Mismatch {
                field: "envelope", ..
            }) => "解密请求校验失败：签名内容中的投标文件摘要与所附信封头不一致，拒绝解密".into(),
            Self::Challenge(_) => "解密请求校验失败：签名内容与本次会话不符，拒绝解密".into(),
            Self::BadEnvelope(_) => "投标文件信封头无效或版本不受支持，无法解密".into(),
            Self::NotARecipient {
                own_serial,
                recipients,
            } => not_a_recipient_reason(own_serial, recipients),
            Self::KeyMismatch => "本机私钥与证书不匹配，无法解密".into(),
            Self::UnwrapFailed => "无法用本证书解开投标文件的内容密钥（文件可能已损坏）".into(),
            Self::BadReplyKey(_) => "开标大厅的临时公钥无效，无法转加密内容密钥".into(),
            Self::Crypto => "转加密内容密钥失败（随机数发生器错误）".into(),
        };
        truncate_chars(&text, MAX_REASON_CHARS)
    }
}

impl std::fmt::Display for DecryptRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason())?;
        // The technical detail, for logs and the CLI; the hall gets `reason()` only.
        match self {
            Self::Challenge(e) => write!(f, " ({e})"),
            Self::BadEnvelope(e) | Self::BadReplyKey(e) => write!(f, " ({e})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for DecryptRefusal {}

/// "本证书不在该投标文件的解密证书列表中", with the phone's serial and as many recipient serials
/// as fit in the broker's 500 characters.
fn not_a_recipient_reason(own_serial: &str, recipients: &[(String, String)]) -> String {
    let head = format!(
        "本证书不在该投标文件的解密证书列表中（本证书序列号 {own_serial}；可解密的证书序列号："
    );
    let mut listed = String::new();
    let mut shown = 0;
    for (serial, _) in recipients {
        // Leave room for "、", the "等 N 个" tail and the closing bracket.
        if head.chars().count() + listed.chars().count() + serial.chars().count() + 16
            > MAX_REASON_CHARS
        {
            break;
        }
        if shown > 0 {
            listed.push('、');
        }
        listed.push_str(serial);
        shown += 1;
    }
    let tail = if shown < recipients.len() {
        format!("等共 {} 个", recipients.len())
    } else {
        String::new()
    };
    format!("{head}{listed}{tail}）")
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// The phone's answer to a `decrypt` claim: the bid file's content key, taken from the
/// phone's own entry of the envelope header and SM2-encrypted to the hall's `reply_key`
/// (GM/T 0009 DER), base64: the completion's `wrapped_key_b64`.
///
/// `secret` is the private key of `identity`'s certificate ([`PhoneIdentity::secret_key`]).
/// Checks, in order: the kind; the challenge (session, app, kind, expiry, and the `envelope:`
/// line against SM3 of the header bytes); the header; the phone's entry (serial and issuer of
/// its certificate); the reply key; the private key against the certificate; the unwrap.
/// Nothing is sent anywhere.
pub fn decrypt_answer(
    claimed: &Claimed,
    identity: &PhoneIdentity,
    secret: &SecretKey,
) -> Result<String, DecryptRefusal> {
    let task = DecryptTask::prepare(claimed, identity.certificate())?;
    // A private key that is not the certificate's would only fail to unwrap: say why.
    if secret.public_key() != task.own_key {
        return Err(DecryptRefusal::KeyMismatch);
    }
    let key =
        unwrap_key(secret, task.wrapped_for_me()).map_err(|_| DecryptRefusal::UnwrapFailed)?;
    task.rewrap(&key)
}

/// A `decrypt` claim checked (kind, challenge, header, reply key) with the phone's own entry
/// found, before the content key is unwrapped: what a split key (密钥拆分) hands to the
/// co-signing service for a blinded co-decryption, then [`DecryptTask::rewrap`]s.
pub struct DecryptTask {
    /// The phone's entry's wrapped content key (GM/T 0009 DER).
    wrapped_for_me: Vec<u8>,
    reply: sm2::PublicKey,
    /// The public key of the certificate the entry was found for.
    own_key: sm2::PublicKey,
}

impl DecryptTask {
    /// Every check of [`decrypt_answer`] that needs no private key, for `certificate`: the
    /// kind, the challenge (with its `envelope:` line against SM3 of the header bytes), the
    /// header, the phone's entry (serial and issuer), the reply key.
    pub fn prepare(
        claimed: &Claimed,
        certificate: &x509_cert::Certificate,
    ) -> Result<Self, DecryptRefusal> {
        if claimed.kind != Kind::Decrypt {
            return Err(DecryptRefusal::NotDecrypt(claimed.kind));
        }
        let raw = claimed
            .envelope_header_b64
            .as_deref()
            .and_then(|b64| STANDARD.decode(b64).ok())
            .ok_or(DecryptRefusal::NoEnvelope)?;
        claimed
            .check_challenge()
            .map_err(DecryptRefusal::Challenge)?;
        let header =
            Header::from_json(&raw).map_err(|e| DecryptRefusal::BadEnvelope(e.to_string()))?;
        let me = Recipient::from_certificate(certificate)
            .map_err(|e| DecryptRefusal::BadEnvelope(format!("own certificate: {e}")))?;
        let entry = header
            .find_recipient(me.serial(), me.issuer())
            .ok_or_else(|| DecryptRefusal::NotARecipient {
                own_serial: me.serial().to_owned(),
                recipients: header
                    .recipients()
                    .iter()
                    .map(|e| (e.serial().to_owned(), e.issuer().to_owned()))
                    .collect(),
            })?;
        let reply = claimed
            .reply_key
            .as_deref()
            .ok_or_else(|| DecryptRefusal::BadReplyKey("the claim has no reply_key".into()))
            .and_then(|hex| {
                parse_reply_key(hex).map_err(|e| DecryptRefusal::BadReplyKey(e.to_string()))
            })?;
        Ok(Self {
            wrapped_for_me: entry.wrapped_key().to_vec(),
            reply,
            own_key: *me.public_key(),
        })
    }

    /// The phone's entry's wrapped content key, to co-decrypt.
    pub fn wrapped_for_me(&self) -> &[u8] {
        &self.wrapped_for_me
    }

    /// The completion's `wrapped_key_b64`: `content_key` (16 bytes) SM2-encrypted to the
    /// hall's `reply_key`.
    pub fn rewrap(&self, content_key: &[u8]) -> Result<String, DecryptRefusal> {
        if content_key.len() != 16 {
            return Err(DecryptRefusal::UnwrapFailed);
        }
        let wrapped = wrap_key(&self.reply, content_key).map_err(|_| DecryptRefusal::Crypto)?;
        Ok(STANDARD.encode(wrapped))
    }
}

/// The `recipients_pem` of an `encrypt` completion: the phone's own certificate first, then
/// `colleagues_pem` (one certificate each; text around the block is ignored), each listed
/// once (by serial and issuer).
///
/// Fails with [`Error::Refused`] when a certificate does not parse or carries no SM2 key, when
/// two different certificates share a serial and issuer, or when there would be more than
/// [`MAX_RECIPIENTS`]. Trust, validity and revocation are the broker's checks.
pub fn encrypt_recipients(
    identity: &PhoneIdentity,
    colleagues_pem: &[String],
) -> Result<Vec<String>, Error> {
    recipients_with_own(
        identity.certificate(),
        identity.certificate_pem(),
        colleagues_pem,
    )
}

/// [`encrypt_recipients`] for any holder of `certificate` (a split key too).
pub fn recipients_with_own(
    certificate: &x509_cert::Certificate,
    certificate_pem: &str,
    colleagues_pem: &[String],
) -> Result<Vec<String>, Error> {
    let own = Recipient::from_certificate(certificate)
        .map_err(|e| Error::Refused(format!("own certificate: {e}")))?;
    let mut seen = vec![own];
    let mut pems = vec![certificate_pem.to_owned()];
    for (i, pem) in colleagues_pem.iter().enumerate() {
        let bad = |e: String| Error::Refused(format!("recipient certificate {}: {e}", i + 1));
        let cert = bzt_crypto::pem_certificate(pem).map_err(|e| bad(e.to_string()))?;
        let r = Recipient::from_certificate(&cert).map_err(|e| bad(e.to_string()))?;
        match seen
            .iter()
            .find(|s| s.serial() == r.serial() && s.issuer() == r.issuer())
        {
            Some(s) if s.public_key() == r.public_key() => continue,
            Some(_) => {
                return Err(bad(format!(
                    "another certificate has the same serial {} and issuer {}",
                    r.serial(),
                    r.issuer()
                )))
            }
            None => {}
        }
        let clean = x509_cert::der::EncodePem::to_pem(&cert, x509_cert::der::pem::LineEnding::LF)
            .map_err(|e| bad(format!("cannot re-encode: {e}")))?;
        seen.push(r);
        pems.push(clean);
    }
    if pems.len() > MAX_RECIPIENTS {
        return Err(Error::Refused(format!(
            "{} recipient certificates (own included); at most {MAX_RECIPIENTS}",
            pems.len()
        )));
    }
    Ok(pems)
}

/// How [`Phone::approve_decrypt`] ended.
#[derive(Clone, Debug)]
pub enum DecryptOutcome {
    /// The session was approved with the re-wrapped key.
    Approved(CompleteAnswer),
    /// The phone could not or would not decrypt, and rejected the session with
    /// [`DecryptRefusal::reason`].
    Rejected {
        /// Why.
        refusal: DecryptRefusal,
        /// The broker's answer to the rejection.
        answer: CompleteAnswer,
    },
}

impl Phone {
    /// Completes a claimed `decrypt` session: approves it with [`decrypt_answer`]'s re-wrapped
    /// key, or, when the phone cannot decrypt (not a recipient, a challenge that does not
    /// match the header, ...), rejects it with the refusal's Chinese reason.
    ///
    /// `match_code` is the user's number-matching pick, when the session uses it.
    pub async fn approve_decrypt(
        &self,
        claimed: &Claimed,
        identity: &PhoneIdentity,
        match_code: Option<String>,
    ) -> Result<DecryptOutcome, Error> {
        match decrypt_answer(claimed, identity, &identity.secret_key()) {
            Ok(wrapped) => {
                let extras = ApproveExtras {
                    match_code,
                    wrapped_key_b64: Some(wrapped),
                    ..Default::default()
                };
                Ok(DecryptOutcome::Approved(
                    self.approve(claimed, identity, extras).await?,
                ))
            }
            Err(refusal) => {
                let answer = self.reject(claimed, &refusal.reason()).await?;
                Ok(DecryptOutcome::Rejected { refusal, answer })
            }
        }
    }

    /// Approves a claimed `encrypt` session naming the phone's own certificate and
    /// `colleagues_pem` as the bid file's recipients ([`encrypt_recipients`]).
    pub async fn approve_encrypt(
        &self,
        claimed: &Claimed,
        identity: &PhoneIdentity,
        colleagues_pem: &[String],
        match_code: Option<String>,
    ) -> Result<CompleteAnswer, Error> {
        let extras = ApproveExtras {
            match_code,
            recipients_pem: encrypt_recipients(identity, colleagues_pem)?,
            ..Default::default()
        };
        self.approve(claimed, identity, extras).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{envelope_hash, Challenge};
    use crate::claim::Token;
    use crate::session::{AppInfo, SessionDisplay};
    use bzt_devca::{DevCa, IssuedCert, LeafSpec};
    use bzt_envelope::{seal, unwrap_key, SealOptions};

    const EXPIRES: &str = "2026-11-23T15:43:02.123Z";

    struct Fixture {
        ca: DevCa,
        alice: IssuedCert,
        bob: IssuedCert,
    }

    fn fixture() -> Fixture {
        let ca = DevCa::generate("测试平台根 CA", "bzt 测试", "platform").unwrap();
        let alice = ca
            .issue(&LeafSpec::new("张三", "示例建设有限公司"))
            .unwrap();
        let bob = ca
            .issue(&LeafSpec::new("李四", "示例建设有限公司"))
            .unwrap();
        Fixture { ca, alice, bob }
    }

    fn identity(leaf: &IssuedCert) -> PhoneIdentity {
        PhoneIdentity::from_pem(&leaf.cert_pem, &leaf.key_pem, None).unwrap()
    }

    /// A sealed file's header bytes, sealed to `to`.
    fn header_for(to: &[&IssuedCert]) -> Vec<u8> {
        let recipients: Vec<Recipient> = to
            .iter()
            .map(|c| Recipient::from_pem(&c.cert_pem).unwrap())
            .collect();
        let mut file = Vec::new();
        seal(&recipients, &b"bid"[..], &mut file, &SealOptions::default()).unwrap();
        let len = u32::from_be_bytes(file[4..8].try_into().unwrap()) as usize;
        file[8..8 + len].to_vec()
    }

    /// A decrypt claim for `header`, whose challenge names `challenge_header`.
    fn claim(header: &[u8], challenge_header: &[u8], reply_hex: &str) -> Claimed {
        let challenge = Challenge {
            kind: Kind::Decrypt,
            app: "hall".into(),
            session: "s1".into(),
            nonce: [3; 16],
            expires: EXPIRES.into(),
            envelope: Some(envelope_hash(challenge_header)),
        };
        Claimed {
            base_url: "http://127.0.0.1:8700".into(),
            session_id: "s1".into(),
            kind: Kind::Decrypt,
            display: SessionDisplay {
                title: "开标解密：bid.bze".into(),
                detail: None,
            },
            app: AppInfo {
                id: "hall".into(),
                name: "开标大厅".into(),
            },
            requester: None,
            expires_at: EXPIRES.into(),
            accept: vec![],
            tbs: challenge.to_text().into_bytes(),
            phone_token: Token::new("t"),
            match_choices: None,
            conversation_allowed: false,
            envelope_header_b64: Some(STANDARD.encode(header)),
            reply_key: Some(reply_hex.into()),
            opening: None,
            seal: None,
        }
    }

    fn one_time_key() -> (SecretKey, String) {
        use sm2::elliptic_curve::Generate;
        let secret = SecretKey::try_generate().unwrap();
        let hex = hex::encode(secret.public_key().to_sec1_bytes());
        (secret, hex)
    }

    #[test]
    fn a_recipient_rewraps_the_content_key_to_the_reply_key() {
        let f = fixture();
        let header = header_for(&[&f.bob, &f.alice]);
        let (hall, reply_hex) = one_time_key();
        let c = claim(&header, &header, &reply_hex);
        let alice = identity(&f.alice);
        let wrapped = decrypt_answer(&c, &alice, &alice.secret_key()).unwrap();
        let key = unwrap_key(&hall, &STANDARD.decode(wrapped).unwrap()).unwrap();
        // The same key Alice's own entry holds.
        let parsed = Header::from_json(&header).unwrap();
        let me = Recipient::from_pem(&f.alice.cert_pem).unwrap();
        let direct = parsed.content_key(&alice.secret_key(), &me).unwrap();
        assert_eq!(key, direct.as_bytes());
    }

    #[test]
    fn a_non_recipient_refuses_naming_the_recipients() {
        let f = fixture();
        let header = header_for(&[&f.bob]);
        let (_, reply_hex) = one_time_key();
        let c = claim(&header, &header, &reply_hex);
        let alice = identity(&f.alice);
        let refusal = decrypt_answer(&c, &alice, &alice.secret_key()).unwrap_err();
        assert!(
            matches!(&refusal, DecryptRefusal::NotARecipient { recipients, .. } if recipients.len() == 1)
        );
        let reason = refusal.reason();
        assert!(
            reason.starts_with("本证书不在该投标文件的解密证书列表中"),
            "{reason}"
        );
        assert!(reason.contains(&f.bob.serial_hex), "{reason}");
        assert!(reason.contains(&f.alice.serial_hex), "{reason}");
    }

    #[test]
    fn a_challenge_for_another_header_is_refused() {
        let f = fixture();
        let header = header_for(&[&f.alice]);
        let other = header_for(&[&f.alice, &f.bob]);
        let (_, reply_hex) = one_time_key();
        let c = claim(&header, &other, &reply_hex);
        let alice = identity(&f.alice);
        let refusal = decrypt_answer(&c, &alice, &alice.secret_key()).unwrap_err();
        assert!(
            matches!(
                refusal,
                DecryptRefusal::Challenge(ChallengeError::Mismatch {
                    field: "envelope",
                    ..
                })
            ),
            "{refusal:?}"
        );
        assert!(refusal.reason().contains("不一致"), "{refusal}");
    }

    #[test]
    fn bad_inputs_are_refused() {
        let f = fixture();
        let header = header_for(&[&f.alice]);
        let (_, reply_hex) = one_time_key();
        let alice = identity(&f.alice);
        let secret = alice.secret_key();

        let mut c = claim(&header, &header, &reply_hex);
        c.reply_key = Some(format!("02{}", &reply_hex[2..66]));
        assert!(matches!(
            decrypt_answer(&c, &alice, &secret),
            Err(DecryptRefusal::BadReplyKey(_))
        ));
        c.reply_key = None;
        assert!(matches!(
            decrypt_answer(&c, &alice, &secret),
            Err(DecryptRefusal::BadReplyKey(_))
        ));

        let c = claim(b"{\"v\":1}", b"{\"v\":1}", &reply_hex);
        assert!(matches!(
            decrypt_answer(&c, &alice, &secret),
            Err(DecryptRefusal::BadEnvelope(_))
        ));

        let mut c = claim(&header, &header, &reply_hex);
        c.envelope_header_b64 = None;
        assert_eq!(
            decrypt_answer(&c, &alice, &secret),
            Err(DecryptRefusal::NoEnvelope)
        );

        let c = claim(&header, &header, &reply_hex);
        let bob = identity(&f.bob);
        assert_eq!(
            decrypt_answer(&c, &alice, &bob.secret_key()),
            Err(DecryptRefusal::KeyMismatch)
        );

        let mut c = claim(&header, &header, &reply_hex);
        c.kind = Kind::Login;
        assert_eq!(
            decrypt_answer(&c, &alice, &secret),
            Err(DecryptRefusal::NotDecrypt(Kind::Login))
        );
    }

    #[test]
    fn long_recipient_lists_fit_the_reason_limit() {
        let recipients: Vec<(String, String)> = (0..50)
            .map(|i| (format!("{:040x}", i + 1), "CN=CA".to_owned()))
            .collect();
        let refusal = DecryptRefusal::NotARecipient {
            own_serial: "ab".repeat(20),
            recipients,
        };
        let reason = refusal.reason();
        assert!(reason.chars().count() <= MAX_REASON_CHARS, "{reason}");
        assert!(reason.ends_with("等共 50 个）"), "{reason}");
        assert!(reason.contains(&format!("{:040x}", 1)), "{reason}");
    }

    #[test]
    fn encrypt_recipients_put_own_first_and_list_each_once() {
        let f = fixture();
        let alice = identity(&f.alice);
        let pems = encrypt_recipients(
            &alice,
            &[
                f.bob.cert_pem.clone(),
                format!("colleague:\n{}", f.alice.cert_pem),
                f.bob.cert_pem.clone(),
            ],
        )
        .unwrap();
        let serials: Vec<String> = pems
            .iter()
            .map(|p| Recipient::from_pem(p).unwrap().serial().to_owned())
            .collect();
        assert_eq!(
            serials,
            vec![f.alice.serial_hex.clone(), f.bob.serial_hex.clone()]
        );

        assert!(matches!(
            encrypt_recipients(&alice, &["not a certificate".into()]),
            Err(Error::Refused(_))
        ));
        let many: Vec<String> = (0..MAX_RECIPIENTS)
            .map(|i| {
                f.ca.issue(&LeafSpec::new(format!("同事{i}"), "示例建设有限公司"))
                    .unwrap()
                    .cert_pem
            })
            .collect();
        assert!(matches!(
            encrypt_recipients(&alice, &many),
            Err(Error::Refused(m)) if m.contains("at most")
        ));
        assert_eq!(
            encrypt_recipients(&alice, &many[..MAX_RECIPIENTS - 1])
                .unwrap()
                .len(),
            MAX_RECIPIENTS
        );
    }
}
