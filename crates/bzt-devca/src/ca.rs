//! The development CA: a self-signed SM2 root that issues leaf certificates.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::asn1::OctetString;
use der::referenced::OwnedToRef;
use der::Encode;
use sm2::dsa::SigningKey;
use sm2::elliptic_curve::Generate;
use sm2::SecretKey;
use time::OffsetDateTime;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

use crate::keyfile::{key_from_pem, key_to_encrypted_pem, key_to_pem};
use crate::names::{name_attr, serial_hex, subject, OID_ORGANIZATIONAL_UNIT};
use crate::pem::{pem_certificate, to_pem};
use crate::sm2sig::{key_matches_cert, signing_key, DerSigner};
use crate::Error;

/// File name of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA's private key (plain PKCS#8, mode 0600) inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key.pem";

/// How long a generated root is valid.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
/// How far back a generated root's notBefore is set, to tolerate clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);
/// `id-kp-clientAuth` (1.3.6.1.5.5.7.3.2).
const OID_KP_CLIENT_AUTH: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// A development CA: its self-signed root certificate and SM2 key.
pub struct DevCa {
    /// The root certificate, parsed: its subject is the issuer of every leaf.
    cert: Certificate,
    /// The same certificate as PEM, as written to `ca.pem` and handed to trust stores.
    cert_pem: String,
    /// Kept to write `ca.key.pem`.
    secret: SecretKey,
    /// Built once: building an SM2 signing key computes `Z`, which is not free.
    key: SigningKey,
    /// The root's subjectKeyIdentifier, copied into each leaf's authorityKeyIdentifier.
    ski: OctetString,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field(
                "subject",
                &self.cert.tbs_certificate().subject().to_string(),
            )
            .field("serial", &serial_hex(&self.cert))
            .finish_non_exhaustive()
    }
}

/// What to put in a leaf certificate. Build with [`LeafSpec::new`] and adjust the fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject commonName: the holder (a person or a company's seal name).
    pub cn: String,
    /// Subject organizationName: the company.
    pub org: String,
    /// 统一社会信用代码 of the company, put in the subject as organizationIdentifier (2.5.4.97);
    /// validated (18 characters, check character).
    pub uscc: Option<String>,
    /// notBefore. May be in the past or the future (not-yet-valid certificates for tests).
    pub not_before: OffsetDateTime,
    /// notAfter. May be in the past (expired certificates for tests); must follow `not_before`.
    pub not_after: OffsetDateTime,
    /// The keyUsage bits; `None` for the default (digitalSignature, keyEncipherment,
    /// dataEncipherment). Other sets make certificates for tests of key-usage checks.
    pub key_usage: Option<KeyUsage>,
}

impl LeafSpec {
    /// A leaf for `cn` at `org`, valid from one minute ago for 365 days, without USCC.
    pub fn new(cn: impl Into<String>, org: impl Into<String>) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            cn: cn.into(),
            org: org.into(),
            uscc: None,
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::days(365),
            key_usage: None,
        }
    }

    /// Sets the keyUsage bits, e.g. `KeyUsages::KeyEncipherment.into()`.
    pub fn with_key_usage(mut self, usage: impl Into<KeyUsage>) -> Self {
        self.key_usage = Some(usage.into());
        self
    }

    /// Sets the 统一社会信用代码.
    pub fn with_uscc(mut self, uscc: impl Into<String>) -> Self {
        self.uscc = Some(uscc.into());
        self
    }

    /// Sets the validity period.
    pub fn with_validity(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

/// A freshly issued leaf: certificate, its private key, and its serial.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM (`CERTIFICATE`).
    pub cert_pem: String,
    /// The private key, plain PKCS#8 PEM (`PRIVATE KEY`); see [`IssuedCert::encrypted_key_pem`].
    pub key_pem: String,
    /// The serial as [`serial_hex`] writes it.
    pub serial_hex: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("serial_hex", &self.serial_hex)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The private key as a PIN-protected PKCS#8 PEM (see [`crate::keyfile`]).
    pub fn encrypted_key_pem(&self, pin: &str) -> Result<String, Error> {
        key_to_encrypted_pem(&key_from_pem(&self.key_pem, None)?, pin)
    }

    /// The certificate, parsed.
    pub fn certificate(&self) -> Result<Certificate, Error> {
        pem_certificate(&self.cert_pem)
    }

    /// Writes `<dir>/<stem>.pem` (certificate) and `<dir>/<stem>.key.pem` (key, mode 0600;
    /// PIN-protected when `pin` is given) and returns the two paths.
    pub fn write_files(
        &self,
        dir: &Path,
        stem: &str,
        pin: Option<&str>,
    ) -> Result<(PathBuf, PathBuf), Error> {
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key.pem"));
        let key_pem = match pin {
            Some(pin) => self.encrypted_key_pem(pin)?,
            None => self.key_pem.clone(),
        };
        write_file(&cert_path, &self.cert_pem, false)?;
        write_file(&key_path, &key_pem, true)?;
        Ok((cert_path, key_path))
    }
}

impl DevCa {
    /// Makes a new self-signed root `C=CN, O=<org>, OU=<domain>, CN=<cn>` with a fresh SM2 key,
    /// valid from an hour ago for ten years. `domain` names the broker trust domain the root is
    /// meant for (e.g. `platform`); it is recorded as the OU and read back by [`DevCa::domain`].
    pub fn generate(cn: &str, org: &str, domain: &str) -> Result<Self, Error> {
        let secret = SecretKey::try_generate()
            .map_err(|e| Error::Key(format!("no randomness for a key: {e}")))?;
        let key = signing_key(&secret)?;
        let subject = subject(cn, org, Some(domain), None)?;
        let now = SystemTime::now();
        let validity = validity(now - BACKDATE, now + ROOT_VALIDITY)?;
        let spki = spki_of(&key)?;
        let profile = Profile {
            issuer: None,
            subject,
            aki: None,
            ca: true,
            key_usage: None,
        };
        let cert = build(profile, validity, spki, &key)?;
        Self::from_parts(cert, secret, key)
    }

    /// Issues a subordinate CA `C=CN, O=<org>, OU=<domain>, CN=<cn>` signed by this one, with a
    /// fresh SM2 key and this root's validity profile: the intermediate of a longer chain (tests
    /// of path building, and platforms whose leaves come from a sub-CA).
    pub fn issue_ca(&self, cn: &str, org: &str, domain: &str) -> Result<Self, Error> {
        let secret = SecretKey::try_generate()
            .map_err(|e| Error::Key(format!("no randomness for a key: {e}")))?;
        let key = signing_key(&secret)?;
        let subject = subject(cn, org, Some(domain), None)?;
        let now = SystemTime::now();
        let validity = validity(now - BACKDATE, now + ROOT_VALIDITY)?;
        let profile = Profile {
            issuer: Some(self.cert.tbs_certificate().subject().clone()),
            subject,
            aki: Some(self.ski.clone()),
            ca: true,
            key_usage: None,
        };
        let cert = build(profile, validity, spki_of(&key)?, &self.key)?;
        Self::from_parts(cert, secret, key)
    }

    /// Loads the CA written by [`DevCa::save`] from `dir` (`ca.pem`, `ca.key.pem`), checking that
    /// the key belongs to the certificate.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let cert_pem = read_file(&dir.join(CA_CERT_FILE))?;
        let key_pem = read_file(&dir.join(CA_KEY_FILE))?;
        let cert = pem_certificate(&cert_pem)?;
        let secret = key_from_pem(&key_pem, None)?;
        let key = signing_key(&secret)?;
        if !key_matches_cert(&key, &cert) {
            return Err(Error::Key(format!(
                "{} does not belong to {}",
                CA_KEY_FILE, CA_CERT_FILE
            )));
        }
        Self::from_parts(cert, secret, key)
    }

    /// Writes `ca.pem` and `ca.key.pem` (mode 0600 on Unix) into `dir`, creating it if needed.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        write_file(&dir.join(CA_CERT_FILE), &self.cert_pem, false)?;
        write_file(&dir.join(CA_KEY_FILE), &key_to_pem(&self.secret)?, true)
    }

    /// Loads the CA from `dir` if `ca.pem` exists there, else generates one and saves it, so a
    /// development broker keeps the same root across restarts.
    pub fn load_or_generate(dir: &Path, cn: &str, org: &str, domain: &str) -> Result<Self, Error> {
        if dir.join(CA_CERT_FILE).exists() {
            Self::load(dir)
        } else {
            let ca = Self::generate(cn, org, domain)?;
            ca.save(dir)?;
            Ok(ca)
        }
    }

    fn from_parts(cert: Certificate, secret: SecretKey, key: SigningKey) -> Result<Self, Error> {
        let ski = match cert
            .tbs_certificate()
            .get_extension::<SubjectKeyIdentifier>()
            .map_err(|e| Error::Certificate(format!("bad subjectKeyIdentifier: {e}")))?
        {
            Some((_, ski)) => ski.0,
            None => {
                SubjectKeyIdentifier::try_from(spki_of(&key)?.owned_to_ref())
                    .map_err(cert_err)?
                    .0
            }
        };
        let cert_pem = to_pem("CERTIFICATE", &cert.to_der().map_err(cert_err)?)?;
        Ok(Self {
            cert,
            cert_pem,
            secret,
            key,
            ski,
        })
    }

    /// The root certificate, parsed.
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The root's SM2 signing key. In development the CA doubles as the seal maker (制章者) and
    /// signs seals with it.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The root certificate as PEM (what goes into a trust domain's `ca_pem_files`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root's subject as an RFC 4514 string.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate().subject().to_string()
    }

    /// The trust domain recorded in the root's OU, if any.
    pub fn domain(&self) -> Option<String> {
        name_attr(
            self.cert.tbs_certificate().subject(),
            OID_ORGANIZATIONAL_UNIT,
        )
    }

    /// Issues a leaf certificate with a fresh SM2 key.
    ///
    /// Extensions: basicConstraints CA:FALSE (critical); keyUsage digitalSignature,
    /// keyEncipherment, dataEncipherment (critical: signing, and SM2 encryption of bid-file content
    /// keys); extendedKeyUsage clientAuth; SKI; AKI = the root's SKI. The serial is random (see
    /// the crate docs). The validity is taken as given, past dates included.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert, Error> {
        if spec.not_after <= spec.not_before {
            return Err(Error::Invalid("not_after must be after not_before".into()));
        }
        let secret = SecretKey::try_generate()
            .map_err(|e| Error::Key(format!("no randomness for a key: {e}")))?;
        let leaf_key = signing_key(&secret)?;
        let cert = self.build_leaf(spec, spki_of(&leaf_key)?)?;
        Ok(IssuedCert {
            cert_pem: to_pem("CERTIFICATE", &cert.to_der().map_err(cert_err)?)?,
            key_pem: key_to_pem(&secret)?,
            serial_hex: serial_hex(&cert),
        })
    }

    /// Issues a leaf certificate for a public key held elsewhere (a phone that keeps its private
    /// key to itself), with the same profile as [`DevCa::issue`]. Returns the certificate PEM and
    /// its serial ([`serial_hex`]).
    pub fn issue_for_public_key(
        &self,
        spec: &LeafSpec,
        public_key: &sm2::PublicKey,
    ) -> Result<(String, String), Error> {
        let spki = SubjectPublicKeyInfo::from_key(public_key).map_err(cert_err)?;
        let cert = self.build_leaf(spec, spki)?;
        Ok((
            to_pem("CERTIFICATE", &cert.to_der().map_err(cert_err)?)?,
            serial_hex(&cert),
        ))
    }

    fn build_leaf(
        &self,
        spec: &LeafSpec,
        spki: SubjectPublicKeyInfo<der::asn1::Any, der::asn1::BitString>,
    ) -> Result<Certificate, Error> {
        if spec.not_after <= spec.not_before {
            return Err(Error::Invalid("not_after must be after not_before".into()));
        }
        let subject = subject(&spec.cn, &spec.org, None, spec.uscc.as_deref())?;
        let validity = validity(spec.not_before.into(), spec.not_after.into())?;
        let profile = Profile {
            issuer: Some(self.cert.tbs_certificate().subject().clone()),
            subject,
            aki: Some(self.ski.clone()),
            ca: false,
            key_usage: spec.key_usage,
        };
        build(profile, validity, spki, &self.key)
    }
}

/// The two certificate shapes this CA makes: its own root, and leaves.
struct Profile {
    /// `None` for the self-signed root.
    issuer: Option<Name>,
    subject: Name,
    /// The issuer's key identifier; `None` for the root (it uses its own SKI).
    aki: Option<OctetString>,
    ca: bool,
    /// A leaf's keyUsage other than the default.
    key_usage: Option<KeyUsage>,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, subject: &Name) -> Name {
        self.issuer.clone().unwrap_or_else(|| subject.clone())
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(self.aki.clone().unwrap_or_else(|| ski.0.clone())),
            ..Default::default()
        };
        let (basic, usage) = if self.ca {
            (
                BasicConstraints {
                    ca: true,
                    path_len_constraint: None,
                },
                KeyUsages::KeyCertSign | KeyUsages::CRLSign,
            )
        } else {
            (
                BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
                KeyUsages::DigitalSignature
                    | KeyUsages::KeyEncipherment
                    | KeyUsages::DataEncipherment,
            )
        };
        let mut exts = Vec::new();
        // BasicConstraints' own criticality rule makes CA:TRUE critical; a leaf's is set critical
        // here too, so no relying party mistakes it for a CA.
        let mut basic_ext = basic.to_extension(tbs.subject(), &exts)?;
        basic_ext.critical = true;
        exts.push(basic_ext);
        let usage = self.key_usage.unwrap_or(KeyUsage(usage));
        exts.push(usage.to_extension(tbs.subject(), &exts)?);
        if !self.ca {
            exts.push(
                ExtendedKeyUsage(vec![OID_KP_CLIENT_AUTH]).to_extension(tbs.subject(), &exts)?,
            );
        }
        exts.push(ski.to_extension(tbs.subject(), &exts)?);
        exts.push(aki.to_extension(tbs.subject(), &exts)?);
        Ok(exts)
    }
}

fn build(
    profile: Profile,
    validity: Validity,
    spki: SubjectPublicKeyInfo<der::asn1::Any, der::asn1::BitString>,
    issuer_key: &SigningKey,
) -> Result<Certificate, Error> {
    let builder =
        CertificateBuilder::new(profile, random_serial()?, validity, spki).map_err(cert_err)?;
    builder
        .build::<_, sm2::dsa::DerSignature>(&DerSigner(issuer_key))
        .map_err(cert_err)
}

/// 16 random bytes, top bit clear (positive) and the next set (no leading zero nibble).
fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| Error::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::new(&bytes).map_err(cert_err)
}

fn validity(not_before: SystemTime, not_after: SystemTime) -> Result<Validity, Error> {
    let time = |t: SystemTime| {
        Time::try_from(t).map_err(|e| Error::Invalid(format!("unusable certificate time: {e}")))
    };
    Ok(Validity::new(time(not_before)?, time(not_after)?))
}

fn spki_of(
    key: &SigningKey,
) -> Result<SubjectPublicKeyInfo<der::asn1::Any, der::asn1::BitString>, Error> {
    SubjectPublicKeyInfo::from_key(key.verifying_key()).map_err(cert_err)
}

fn cert_err(e: impl std::fmt::Display) -> Error {
    Error::Certificate(e.to_string())
}

fn read_file(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path`; a `secret` file is created with mode 0600 (on Unix) before any
/// byte is written, and an existing file's mode is tightened too.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), Error> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm2sig::{cert_public_key, cert_verifying_key, verify_cert_signature};

    #[test]
    fn issue_for_public_key_certifies_that_key() {
        let ca = DevCa::generate("Test CA", "Test", "platform").expect("ca");
        let secret = SecretKey::try_generate().expect("key");
        let public = secret.public_key();
        let (pem, serial) = ca
            .issue_for_public_key(&LeafSpec::new("张三", "示例建设有限公司"), &public)
            .expect("issue");
        let cert = pem_certificate(&pem).expect("parse");
        assert_eq!(serial_hex(&cert), serial);
        assert_eq!(cert_public_key(&cert).expect("spki"), public);
        let root_key = cert_verifying_key(ca.certificate()).expect("root key");
        verify_cert_signature(&cert, &root_key).expect("signed by the CA");
        assert!(cert
            .tbs_certificate()
            .subject()
            .to_string()
            .contains("CN=张三"));
        // A certificate for another key is a different certificate.
        let other = SecretKey::try_generate().expect("key").public_key();
        let (pem2, _) = ca
            .issue_for_public_key(&LeafSpec::new("张三", "示例建设有限公司"), &other)
            .expect("issue");
        let cert2 = pem_certificate(&pem2).expect("parse");
        assert_ne!(cert_public_key(&cert2).expect("spki"), public);
    }

    #[test]
    fn issue_for_public_key_rejects_bad_validity() {
        let ca = DevCa::generate("Test CA", "Test", "platform").expect("ca");
        let public = SecretKey::try_generate().expect("key").public_key();
        let now = OffsetDateTime::now_utc();
        let spec = LeafSpec::new("a", "b").with_validity(now, now);
        assert!(ca.issue_for_public_key(&spec, &public).is_err());
    }
}
