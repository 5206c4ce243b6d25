//! SM2 private key files: plain PKCS#8, and PIN-protected PKCS#8 `EncryptedPrivateKeyInfo`.
//!
//! # Formats
//! - Plain: PKCS#8 `PrivateKeyInfo`, PEM label `PRIVATE KEY` (what
//!   `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2` writes). SEC1
//!   `EC PRIVATE KEY` files are read too.
//! - PIN-protected: the *standard* PKCS#8 `EncryptedPrivateKeyInfo` (RFC 5958), PEM label
//!   `ENCRYPTED PRIVATE KEY`, with PBES2 (RFC 8018):
//!   - key derivation: PBKDF2 with PRF `hmacWithSHA256` (1.2.840.113549.2.9), a 16-byte random
//!     salt and [`PBKDF2_ITERATIONS`] iterations, deriving a 16-byte key from the PIN's UTF-8 bytes;
//!   - encryption: SM4-CBC (1.2.156.10197.1.104.2) with a 16-byte random IV and PKCS#7 padding.
//!
//!   This is exactly what `openssl pkcs8 -topk8 -v2 sm4-cbc -v2prf hmacWithSHA256 -iter 100000`
//!   writes, so OpenSSL reads our files (`openssl pkey -in key.pem -passin pass:<PIN>`) and we read
//!   its files. HMAC-SM3 would be the more "national" PRF, but OpenSSL 3.0 does not accept it in
//!   PBES2 (`Unknown PRF algorithm hmacWithSM3`), and an unreadable file is worth less than the
//!   symbolic gain. The `pkcs8` crate's `encryption` feature was not used because its PBES2
//!   implementation knows only AES and DES ciphers.
//!
//! A wrong PIN and a damaged file cannot be told apart (CBC has no integrity check); both give
//! [`Error::WrongPin`].

use der::asn1::{Any, Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Sequence};
use sm2::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use sm2::SecretKey;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::pem::{pem_blocks, to_pem};
use crate::Error;

/// PEM label of plain PKCS#8 keys.
pub const PLAIN_KEY_LABEL: &str = "PRIVATE KEY";
/// PEM label of SEC1 keys (read only).
pub const SEC1_KEY_LABEL: &str = "EC PRIVATE KEY";
/// PEM label of PIN-protected PKCS#8 keys.
pub const ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED PRIVATE KEY";
/// PBKDF2 iterations used when writing a PIN-protected key.
pub const PBKDF2_ITERATIONS: u32 = 100_000;
/// Most PBKDF2 iterations accepted when reading, so a hostile file cannot stall the reader.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

const OID_PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const OID_PBKDF2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.12");
const OID_HMAC_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.9");
const OID_SM4_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.104.2");

const SALT_LEN: usize = 16;
const SM4_KEY_LEN: usize = 16;
const SM4_BLOCK_LEN: usize = 16;

/// `EncryptedPrivateKeyInfo ::= SEQUENCE { encryptionAlgorithm, encryptedData OCTET STRING }`
#[derive(Sequence)]
struct EncryptedPrivateKeyInfo {
    encryption_algorithm: AlgorithmIdentifierOwned,
    encrypted_data: OctetString,
}

/// `PBES2-params ::= SEQUENCE { keyDerivationFunc, encryptionScheme }`
#[derive(Sequence)]
struct Pbes2Params {
    key_derivation_func: AlgorithmIdentifierOwned,
    encryption_scheme: AlgorithmIdentifierOwned,
}

/// `PBKDF2-params ::= SEQUENCE { salt OCTET STRING, iterationCount INTEGER,
/// keyLength INTEGER OPTIONAL, prf AlgorithmIdentifier DEFAULT hmacWithSHA1 }`
#[derive(Sequence)]
struct Pbkdf2Params {
    salt: OctetString,
    iteration_count: u32,
    key_length: Option<u32>,
    prf: Option<AlgorithmIdentifierOwned>,
}

/// Encodes `secret` as a plain PKCS#8 PEM (`PRIVATE KEY`).
pub fn key_to_pem(secret: &SecretKey) -> Result<String, Error> {
    let doc = secret
        .to_pkcs8_der()
        .map_err(|e| Error::Key(format!("cannot encode the key: {e}")))?;
    to_pem(PLAIN_KEY_LABEL, doc.as_bytes())
}

/// Encodes `secret` as a PIN-protected PKCS#8 PEM (`ENCRYPTED PRIVATE KEY`, see the module doc).
pub fn key_to_encrypted_pem(secret: &SecretKey, pin: &str) -> Result<String, Error> {
    if pin.is_empty() {
        return Err(Error::Key("the PIN must not be empty".into()));
    }
    let plain = secret
        .to_pkcs8_der()
        .map_err(|e| Error::Key(format!("cannot encode the key: {e}")))?;
    let mut salt = [0u8; SALT_LEN];
    let mut iv = [0u8; SM4_BLOCK_LEN];
    getrandom::fill(&mut salt).map_err(|_| Error::Random)?;
    getrandom::fill(&mut iv).map_err(|_| Error::Random)?;
    let key = derive_key(pin, &salt, PBKDF2_ITERATIONS);
    let ciphertext = sm4_cbc_encrypt(&key, &iv, plain.as_bytes());

    let der_err = |e: der::Error| Error::Key(format!("cannot encode the key file: {e}"));
    let kdf_params = Pbkdf2Params {
        salt: OctetString::new(salt.to_vec()).map_err(der_err)?,
        iteration_count: PBKDF2_ITERATIONS,
        key_length: None,
        prf: Some(AlgorithmIdentifierOwned {
            oid: OID_HMAC_SHA256,
            parameters: Some(Any::encode_from(&Null).map_err(der_err)?),
        }),
    };
    let pbes2 = Pbes2Params {
        key_derivation_func: AlgorithmIdentifierOwned {
            oid: OID_PBKDF2,
            parameters: Some(Any::encode_from(&kdf_params).map_err(der_err)?),
        },
        encryption_scheme: AlgorithmIdentifierOwned {
            oid: OID_SM4_CBC,
            parameters: Some(
                Any::encode_from(&OctetString::new(iv.to_vec()).map_err(der_err)?)
                    .map_err(der_err)?,
            ),
        },
    };
    let info = EncryptedPrivateKeyInfo {
        encryption_algorithm: AlgorithmIdentifierOwned {
            oid: OID_PBES2,
            parameters: Some(Any::encode_from(&pbes2).map_err(der_err)?),
        },
        encrypted_data: OctetString::new(ciphertext).map_err(der_err)?,
    };
    to_pem(ENCRYPTED_KEY_LABEL, &info.to_der().map_err(der_err)?)
}

/// True when `pem` holds a PIN-protected key (an `ENCRYPTED PRIVATE KEY` block).
pub fn is_encrypted_key_pem(pem: &str) -> bool {
    pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
}

/// Reads an SM2 private key from PEM: PKCS#8, SEC1, or PIN-protected PKCS#8.
///
/// `pin` is required for a PIN-protected key ([`Error::PinRequired`] without it) and ignored for
/// a plain one. Text around the PEM block is ignored; the first key block is used.
pub fn key_from_pem(pem: &str, pin: Option<&str>) -> Result<SecretKey, Error> {
    let block = pem_blocks(pem)?
        .into_iter()
        .find(|b| {
            [PLAIN_KEY_LABEL, SEC1_KEY_LABEL, ENCRYPTED_KEY_LABEL].contains(&b.label.as_str())
        })
        .ok_or_else(|| Error::Key("no private key PEM block".into()))?;
    let not_sm2 = |e: String| Error::Key(format!("not an SM2 private key: {e}"));
    match block.label.as_str() {
        PLAIN_KEY_LABEL => {
            SecretKey::from_pkcs8_der(&block.der).map_err(|e| not_sm2(e.to_string()))
        }
        SEC1_KEY_LABEL => SecretKey::from_sec1_der(&block.der).map_err(|e| not_sm2(e.to_string())),
        _ => {
            let pin = pin.ok_or(Error::PinRequired)?;
            let plain = decrypt_pkcs8(&block.der, pin)?;
            SecretKey::from_pkcs8_der(&plain).map_err(|_| Error::WrongPin)
        }
    }
}

/// Decrypts the DER of an `EncryptedPrivateKeyInfo` (PBES2 / PBKDF2-HMAC-SHA256 / SM4-CBC).
fn decrypt_pkcs8(der: &[u8], pin: &str) -> Result<Vec<u8>, Error> {
    let unsupported = |what: &str| Error::Key(format!("unsupported encrypted key file: {what}"));
    let malformed = |e: der::Error| Error::Key(format!("malformed encrypted key: {e}"));

    let info = EncryptedPrivateKeyInfo::from_der(der).map_err(malformed)?;
    if info.encryption_algorithm.oid != OID_PBES2 {
        return Err(unsupported("not PBES2"));
    }
    let pbes2: Pbes2Params = decode_params(&info.encryption_algorithm).map_err(malformed)?;
    if pbes2.key_derivation_func.oid != OID_PBKDF2 {
        return Err(unsupported("key derivation is not PBKDF2"));
    }
    let kdf: Pbkdf2Params = decode_params(&pbes2.key_derivation_func).map_err(malformed)?;
    match &kdf.prf {
        Some(prf) if prf.oid == OID_HMAC_SHA256 => {}
        _ => return Err(unsupported("PBKDF2 PRF is not hmacWithSHA256")),
    }
    if kdf.key_length.is_some_and(|l| l as usize != SM4_KEY_LEN) {
        return Err(unsupported("key length is not 16"));
    }
    if kdf.iteration_count == 0 || kdf.iteration_count > MAX_PBKDF2_ITERATIONS {
        return Err(unsupported("PBKDF2 iteration count out of range"));
    }
    if pbes2.encryption_scheme.oid != OID_SM4_CBC {
        return Err(unsupported("cipher is not SM4-CBC"));
    }
    let iv: OctetString = decode_params(&pbes2.encryption_scheme).map_err(malformed)?;
    let iv: [u8; SM4_BLOCK_LEN] = iv
        .as_bytes()
        .try_into()
        .map_err(|_| unsupported("SM4-CBC IV is not 16 bytes"))?;

    let key = derive_key(pin, kdf.salt.as_bytes(), kdf.iteration_count);
    sm4_cbc_decrypt(&key, &iv, info.encrypted_data.as_bytes()).ok_or(Error::WrongPin)
}

/// Decodes an AlgorithmIdentifier's parameters as `T` (absent parameters are an error).
fn decode_params<T: for<'a> Decode<'a, Error = der::Error>>(
    alg: &AlgorithmIdentifierOwned,
) -> Result<T, der::Error> {
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| der::Error::from(der::ErrorKind::Failed))?;
    T::from_der(&params.to_der()?)
}

fn derive_key(pin: &str, salt: &[u8], iterations: u32) -> [u8; SM4_KEY_LEN] {
    let mut key = [0u8; SM4_KEY_LEN];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(pin.as_bytes(), salt, iterations, &mut key);
    key
}

fn sm4_cbc_encrypt(key: &[u8; 16], iv: &[u8; 16], plain: &[u8]) -> Vec<u8> {
    use cbc::cipher::{block_padding::Pkcs7, BlockModeEncrypt, KeyIvInit};
    cbc::Encryptor::<sm4::Sm4>::new(key.into(), iv.into()).encrypt_padded_vec::<Pkcs7>(plain)
}

fn sm4_cbc_decrypt(key: &[u8; 16], iv: &[u8; 16], ciphertext: &[u8]) -> Option<Vec<u8>> {
    use cbc::cipher::{block_padding::Pkcs7, BlockModeDecrypt, KeyIvInit};
    if ciphertext.is_empty() || ciphertext.len() % SM4_BLOCK_LEN != 0 {
        return None;
    }
    cbc::Decryptor::<sm4::Sm4>::new(key.into(), iv.into())
        .decrypt_padded_vec::<Pkcs7>(ciphertext)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::elliptic_curve::Generate;

    #[test]
    fn plain_round_trip() {
        let key = SecretKey::try_generate().unwrap();
        let pem = key_to_pem(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!is_encrypted_key_pem(&pem));
        assert_eq!(key_from_pem(&pem, None).unwrap(), key);
        assert_eq!(key_from_pem(&pem, Some("ignored")).unwrap(), key);
    }

    #[test]
    fn encrypted_round_trip_and_wrong_pin() {
        let key = SecretKey::try_generate().unwrap();
        let pem = key_to_encrypted_pem(&key, "123456").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert!(is_encrypted_key_pem(&pem));
        assert_eq!(key_from_pem(&pem, Some("123456")).unwrap(), key);
        assert!(matches!(key_from_pem(&pem, None), Err(Error::PinRequired)));
        assert!(matches!(
            key_from_pem(&pem, Some("654321")),
            Err(Error::WrongPin)
        ));
        assert!(key_to_encrypted_pem(&key, "").is_err());
    }

    #[test]
    fn sm4_cbc_matches_the_standard_vector() {
        // GB/T 32907-2016 Appendix A, example 1 (one block), as the first CBC block with a zero IV.
        let key: [u8; 16] = hex::decode("0123456789abcdeffedcba9876543210")
            .unwrap()
            .try_into()
            .unwrap();
        let ct = sm4_cbc_encrypt(&key, &[0u8; 16], &key);
        assert_eq!(hex::encode(&ct[..16]), "681edf34d206965e86b3e94f536e4246");
        assert_eq!(sm4_cbc_decrypt(&key, &[0u8; 16], &ct).unwrap(), key);
    }
}
