//! GB/T 38540-2020 (安全电子签章密码技术规范) electronic seals, version 4, for 扫码签章.
//!
//! A seal maker (制章者) makes an [`SeSeal`](asn1::SeSeal) once: a picture, a name and the
//! certificates of its owner, signed with the maker's SM2 key ([`make::make_seal`]). At each
//! stamping the owner signs an [`SesSignature`](asn1::SesSignature) that embeds the whole seal
//! and the SM3 hash of the protected data ([`make::sign_with_seal`]). [`verify`] checks both in
//! the order of the C++ reference verifier (see the crate's tests and `docs/seals.md`).
//!
//! Why by hand: no Rust crate implements GB/T 38540; the DER itself is the `der` crate's, and
//! the SM2 signatures are `bzt-devca`'s helpers (SM3, ID `1234567812345678`, DER `r,s`), the
//! form BouncyCastle's `SM3WithSM2` and OpenSSL 3 produce.
//!
//! # Modules
//! - [`asn1`]: the structures as they travel.
//! - [`make`]: making seals and seal signatures.
//! - [`verify`]: reading and checking them.
//! - [`ofd`]: a one-page OFD document carrying a seal signature.
//! - [`error`]: [`SealError`], whose message names the failing part.

pub mod asn1;
pub mod error;
pub mod make;
pub mod ofd;
pub mod verify;

pub use error::{SealError, SealErrorKind};
pub use make::{
    make_seal, prepare_signature, sign_with_seal, Picture, PreparedSignature, SealSpec, SealType,
};
pub use verify::{verify_seal, verify_signature, Seal, SealSignature, VerifiedSignature};

/// `SES_Header.id` of every seal.
pub const HEADER_ID: &str = "ES";
/// The format version this crate makes and reads (GB/T 38540-2020).
pub const VERSION: u32 = 4;
/// The vendor id this crate writes into `SES_Header.vid`.
pub const VENDOR_ID: &str = "bzt";
/// SM2 with SM3, the only signature algorithm of seals here.
pub const OID_SM2_WITH_SM3: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");
/// How far a stamp's `timeInfo` may lie in the verifier's future (clocks differ).
pub const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(5);
