//! Encryption of every phone ↔ service message to the service's static key.
//!
//! Why not TLS alone: the proofs, `Q1`, `s1`, `T1`, `T2` and `P2` each let a
//! holder of the phone file test PIN guesses (a transcript tests a candidate
//! `P1` or `d1`), and TLS ends at whatever proxy, broker or log is in front
//! of the service. Sealing to the service's own key, pinned in the phone's
//! identity at enrolment, leaves a passive capture with nothing to test.
//!
//! Request: ephemeral `E = e·G`; `(x, y) = e·S` (S the service key);
//! `k_req ‖ k_resp = KDF_SM2("BZT-COSIGN-CHANNEL-V1" ‖ x ‖ y ‖ E ‖ S, 32)`;
//! body SM4-GCM under `k_req` with a random 96-bit nonce and associated data
//! `"req:" ‖ aad` (the caller passes the method and path, so a body cannot be
//! moved to another endpoint). The response is SM4-GCM under `k_resp`, data
//! `"resp:" ‖ aad`. The ephemeral secret lives only for one exchange.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{AesGcm, KeyInit};
use sm2::elliptic_curve::consts::U12;
use sm2::elliptic_curve::Group;
use sm2::{NonZeroScalar, ProjectivePoint};
use sm4::Sm4;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::kdf::sm2_kdf;
use super::points::{
    decode_point, decode_scalar, encode_point, encode_scalar, random_bytes, random_scalar,
};
use super::{Error, Result};

type Sm4Gcm = AesGcm<Sm4, U12>;

const LABEL: &[u8] = b"BZT-COSIGN-CHANNEL-V1";

/// The service's static channel key (its public half is `GET /v1/info`'s
/// `service_key`).
#[derive(Clone)]
pub struct ChannelKey {
    secret: NonZeroScalar,
    public: ProjectivePoint,
}

impl ChannelKey {
    pub fn generate() -> Result<Self> {
        Self::from_secret(random_scalar()?)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_secret(decode_scalar(bytes)?)
    }

    fn from_secret(secret: NonZeroScalar) -> Result<Self> {
        let public = ProjectivePoint::mul_by_generator(&*secret);
        Ok(Self { secret, public })
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        encode_scalar(&self.secret)
    }

    pub fn public(&self) -> &ProjectivePoint {
        &self.public
    }

    /// Opens a request and returns its plaintext with the key for the answer.
    pub fn open_request(
        &self,
        aad: &[u8],
        sealed: &SealedRequest,
    ) -> Result<(Vec<u8>, ResponseKey)> {
        let ephemeral = decode_point(&sealed.ephemeral).map_err(|_| Error::Channel)?;
        let keys = derive(&(ephemeral * *self.secret), &ephemeral, &self.public);
        let plain = aead_open(
            &keys.request,
            &sealed.nonce,
            &tagged(b"req:", aad),
            &sealed.ciphertext,
        )?;
        Ok((plain, keys))
    }
}

impl Drop for ChannelKey {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl std::fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelKey({})", hex::encode(encode_point(&self.public)))
    }
}

/// A sealed request body: `E`, nonce, ciphertext with its tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedRequest {
    /// `04 ‖ X ‖ Y` of the ephemeral point.
    pub ephemeral: Vec<u8>,
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

/// A sealed response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedResponse {
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

/// The keys of one exchange, held by the phone between request and answer
/// and by the service while it answers.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ResponseKey {
    request: [u8; 16],
    response: [u8; 16],
}

impl std::fmt::Debug for ResponseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseKey(..)")
    }
}

impl ResponseKey {
    pub fn seal_response(&self, aad: &[u8], plaintext: &[u8]) -> Result<SealedResponse> {
        let nonce = random_bytes::<12>()?;
        let ciphertext = aead_seal(&self.response, &nonce, &tagged(b"resp:", aad), plaintext)?;
        Ok(SealedResponse { nonce, ciphertext })
    }

    pub fn open_response(&self, aad: &[u8], sealed: &SealedResponse) -> Result<Vec<u8>> {
        aead_open(
            &self.response,
            &sealed.nonce,
            &tagged(b"resp:", aad),
            &sealed.ciphertext,
        )
    }
}

/// Seals a request to the service key `service` (validated: it came from the
/// phone's identity) and keeps the keys for the answer.
pub fn seal_request(
    service: &ProjectivePoint,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(SealedRequest, ResponseKey)> {
    let mut e = random_scalar()?;
    let ephemeral = ProjectivePoint::mul_by_generator(&*e);
    let keys = derive(&(*service * *e), &ephemeral, service);
    e.zeroize();
    let nonce = random_bytes::<12>()?;
    let ciphertext = aead_seal(&keys.request, &nonce, &tagged(b"req:", aad), plaintext)?;
    Ok((
        SealedRequest {
            ephemeral: encode_point(&ephemeral),
            nonce,
            ciphertext,
        },
        keys,
    ))
}

fn derive(
    shared: &ProjectivePoint,
    ephemeral: &ProjectivePoint,
    service: &ProjectivePoint,
) -> ResponseKey {
    let mut z = LABEL.to_vec();
    z.extend_from_slice(&encode_point(shared)[1..]);
    z.extend_from_slice(&encode_point(ephemeral));
    z.extend_from_slice(&encode_point(service));
    let mut okm = [0u8; 32];
    sm2_kdf(&z, &mut okm);
    z.zeroize();
    let mut keys = ResponseKey {
        request: [0; 16],
        response: [0; 16],
    };
    keys.request.copy_from_slice(&okm[..16]);
    keys.response.copy_from_slice(&okm[16..]);
    okm.zeroize();
    keys
}

fn tagged(prefix: &[u8], aad: &[u8]) -> Vec<u8> {
    [prefix, aad].concat()
}

fn aead_seal(key: &[u8; 16], nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let cipher = Sm4Gcm::new_from_slice(key).map_err(|_| Error::Channel)?;
    cipher
        .encrypt(
            nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Channel)
}

fn aead_open(key: &[u8; 16], nonce: &[u8; 12], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
    let cipher = Sm4Gcm::new_from_slice(key).map_err(|_| Error::Channel)?;
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| Error::Channel)
}

/// The request key of a sealed request, derived as the service would: for
/// the cross-check of SM4-GCM against an independent implementation only.
#[doc(hidden)]
pub fn request_key_for_interop(service: &ChannelKey, sealed: &SealedRequest) -> Result<[u8; 16]> {
    let ephemeral = decode_point(&sealed.ephemeral)?;
    let keys = derive(&(ephemeral * *service.secret), &ephemeral, &service.public);
    Ok(keys.request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_answer_round_trip() {
        let service = ChannelKey::generate().unwrap();
        let (sealed, phone_keys) =
            seal_request(service.public(), b"POST /v1/keys/k/sign", b"{\"q1\":1}").unwrap();
        let (plain, service_keys) = service
            .open_request(b"POST /v1/keys/k/sign", &sealed)
            .unwrap();
        assert_eq!(plain, b"{\"q1\":1}");
        let answer = service_keys
            .seal_response(b"POST /v1/keys/k/sign", b"{\"r\":2}")
            .unwrap();
        assert_eq!(
            phone_keys
                .open_response(b"POST /v1/keys/k/sign", &answer)
                .unwrap(),
            b"{\"r\":2}"
        );
    }

    #[test]
    fn another_key_another_path_or_a_flipped_byte_do_not_open() {
        let service = ChannelKey::generate().unwrap();
        let other = ChannelKey::generate().unwrap();
        let (mut sealed, keys) = seal_request(service.public(), b"a", b"secret").unwrap();
        assert_eq!(
            other.open_request(b"a", &sealed).unwrap_err(),
            Error::Channel
        );
        assert_eq!(
            service.open_request(b"b", &sealed).unwrap_err(),
            Error::Channel
        );
        let answer = keys.seal_response(b"a", b"x").unwrap();
        // A response cannot be replayed as a request, nor opened under another path.
        assert!(keys.open_response(b"b", &answer).is_err());
        sealed.ciphertext[0] ^= 1;
        assert_eq!(
            service.open_request(b"a", &sealed).unwrap_err(),
            Error::Channel
        );
    }

    #[test]
    fn the_ciphertext_does_not_contain_the_plaintext() {
        let service = ChannelKey::generate().unwrap();
        let (sealed, _) = seal_request(service.public(), b"a", b"0123456789abcdef").unwrap();
        assert!(!sealed.ciphertext.windows(4).any(|w| w == b"0123"));
    }
}
