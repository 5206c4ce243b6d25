//! GB/T 38540-2020 (安全电子签章密码技术规范) electronic seals, version 4, for 扫码签章.
//!
//! A seal maker (制章者) makes an [`SeSeal`](asn1::SeSeal) once: a picture, a name and the
//! certificates of its owner, signed with the maker's SM2 key ([`make_seal`], feature `maker`). At each
//! stamping the owner signs an [`SesSignature`](asn1::SesSignature) that embeds the whole seal
//! and the SM3 hash of the protected data ([`prepare_signature`]). [`verify`] checks both in
//! the order of the C++ reference verifier (see the crate's tests and `docs/seals.md`).
//!
//! Why by hand: no Rust crate implements GB/T 38540; the DER itself is the `der` crate's, and
//! the SM2 signatures are `bzt-crypto`'s helpers (SM3, ID `1234567812345678`, DER `r,s`), the
//! form BouncyCastle's `SM3WithSM2` and OpenSSL 3 produce.
//!
//! # Features
//! - `maker` (off by default): [`make_seal`] and [`sign_with_seal`], which take a whole SM2
//!   private key (the development seal maker, the CLI's `bzt seal stamp`). Without it the crate
//!   reads, prepares and verifies only, and does not depend on the development CA.
//!
//! # Modules
//! - [`asn1`]: the structures as they travel.
//! - [`make`]: what a seal holds, and seal signatures prepared for any signer.
//! - `maker` (feature `maker`): making seals and seal signatures with a whole key.
//! - [`verify`]: reading and checking them.
//! - [`ofd`]: a one-page OFD document carrying a seal signature.
//! - [`error`]: [`SealError`], whose message names the failing part.

pub mod asn1;
pub mod error;
pub mod make;
#[cfg(feature = "maker")]
pub mod maker;
pub mod ofd;
pub mod ses_time;
pub mod verify;

pub use error::{SealError, SealErrorKind};
pub use make::{prepare_signature, Picture, PreparedSignature, SealSpec, SealType};
#[cfg(feature = "maker")]
pub use maker::{make_seal, sign_with_seal};
pub use ses_time::SesTime;
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
