//! Two-party SM2: the private key `d` never exists in one place.
//!
//! The scheme is the multiplicative one that Tongsuo ships
//! (`crypto/sm2/sm2_threshold.c`), after Lin Jingqiang et al.'s two-party
//! SM2 framework. The phone holds `d1`, the co-signing service `d2`, with
//! `(1 + d)⁻¹ = d1·d2`:
//!
//! - key generation ([`keygen`]): `P1 = d1⁻¹·G`, `P2 = d2⁻¹·G`, each with a
//!   Schnorr proof of knowledge ([`schnorr`]); `P = d1⁻¹·P2 − G = d2⁻¹·P1 − G`.
//! - signing ([`sign`]): phone `Q1 = w1·G`; service `(x1, y1) = w2·G + d2⁻¹·Q1`,
//!   `r = e + x1`, `s1 = d2·(r + w2)`; phone `s = d1·(s1 + w1) − r`.
//! - decryption ([`decrypt`]), blinded: phone `T1 = w·C1`; service
//!   `T2 = d2⁻¹·T1`; phone `(w⁻¹·d1⁻¹)·T2 − C1 = d·C1`.
//!
//! - re-sharing ([`reshare`], 企业证书授权): a member's pair `d1·t·u`,
//!   `d2·t⁻¹·u⁻¹` for the same joint key.
//!
//! Around it: the phone's share masked by its PIN and the PIN proof
//! ([`pin`]), and the encryption of every phone ↔ service message to the
//! service's static key ([`channel`]), without which a captured transcript
//! would let a thief of the phone file test PIN guesses offline.
//!
//! All secret arithmetic is the `sm2` crate's constant-time `Scalar`,
//! `NonZeroScalar` and `ProjectivePoint`; every received point is checked
//! (uncompressed, on the curve, not the identity) before it is multiplied.

pub mod channel;
pub mod decrypt;
pub mod keygen;
pub mod pin;
pub mod points;
pub mod reshare;
pub mod schnorr;
pub mod sign;

mod kdf;

pub use channel::{ChannelKey, ResponseKey, SealedRequest, SealedResponse};
pub use decrypt::{der_c1, open_der_with_shared_point, service_decrypt, BlindedDecryption};
pub use keygen::{joint_public_key_phone, joint_public_key_service, PhoneKeygen, ServiceShare};
pub use pin::{MaskedShare, PinProof, PinStatement, DEFAULT_PIN_ITERATIONS};
pub use points::{
    decode_point, decode_scalar, encode_point, encode_scalar, point_from_hex, point_to_hex,
};
pub use reshare::{MemberAcceptance, ReshareDealer};
pub use schnorr::SchnorrProof;
pub use sign::{message_digest, service_sign, PhoneSigning};

/// The SM2 distinguishing ID every party of `bzt` signs with (GB/T 35276).
pub const DEFAULT_DIST_ID: &str = "1234567812345678";

/// Why a two-party step failed. Messages say what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not an SM2 point as 04||X||Y on the curve (or it is the point at infinity)")]
    InvalidPoint,
    #[error("not a scalar in [1, n-1]")]
    InvalidScalar,
    #[error("the proof of knowledge does not verify")]
    BadProof,
    #[error("the joint signature does not verify under the joint public key")]
    BadSignature,
    #[error("degenerate round (r = 0, s = 0 or r + k = n): start again with fresh nonces")]
    Degenerate,
    #[error("the SM2 ciphertext is malformed or its C3 check failed")]
    Decrypt,
    #[error("the channel message does not open under this key")]
    Channel,
    #[error("the system random generator failed")]
    Random,
}

pub type Result<T> = core::result::Result<T, Error>;
