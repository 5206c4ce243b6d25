//! 企业证书授权 on the phone: the administrator grants its company certificate
//! to a member, extends, takes it back and lists grants; the member's phone
//! asks for a grant with an invitation and turns the offer into its own
//! split identity under its own PIN. See docs/key-splitting.md.
//!
//! The member's phone first writes an invitation (its name, device and a
//! fresh receiving key, whose secret stays in its directory); the
//! administrator's phone answers with an offer (the grant package, its
//! share sealed to that receiving key, and the company certificate); the
//! member's phone accepts it with the service.

use std::path::Path;

use bzt_cosigner::wire::{CertificateInfo, Delegate, GrantList, GrantPackage};
use bzt_cosigner::{CosignerClient, SplitKeyFile};
use bzt_crypto::two_party::{point_from_hex, point_to_hex, ChannelKey};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::identity::Device;
use crate::split::{
    check_pin, write_private, SplitIdentity, UnlockedSplit, DEVICE_FILE, SPLIT_KEY_FILE,
};

/// The secret of the member's receiving key, in the member's directory
/// until it accepts.
pub const RECEIVING_KEY_FILE: &str = "grant-receiving.key";
/// The certificate type recorded in grants and reclaim records.
pub const CERTIFICATE_TYPE: &str = "SM2 企业证书（密钥拆分）";

/// What the member's phone shows the administrator (a file or a QR code).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrantInvite {
    pub name: String,
    pub device: Device,
    /// The member's receiving key, hex `04‖X‖Y`.
    pub receiving_key: String,
}

/// What the administrator's phone answers an invitation with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrantOffer {
    pub package: GrantPackage,
    /// The company certificate (and chain), PEM.
    pub certificate_pem: String,
}

/// The member's phone: a fresh receiving key, its secret and the device
/// written to `dir` (the identity directory to be).
pub fn invite(dir: &Path, name: &str, device: Device) -> Result<GrantInvite, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Identity(format!("cannot create {}: {e}", dir.display())))?;
    let device_json = serde_json::to_string_pretty(&device)
        .map_err(|e| Error::Identity(format!("cannot encode {DEVICE_FILE}: {e}")))?;
    write_private(&dir.join(DEVICE_FILE), &device_json)?;
    let key = ChannelKey::generate().map_err(bzt_cosigner::ClientError::from)?;
    write_private(&dir.join(RECEIVING_KEY_FILE), &hex::encode(key.to_bytes()))?;
    Ok(GrantInvite {
        name: name.to_owned(),
        device,
        receiving_key: point_to_hex(key.public()),
    })
}

/// The member's phone: accepts `offer` with the receiving key in `dir`,
/// masks its share under `pin` and writes its identity to `dir` (the
/// company certificate, its own `split-key.json`, the invitation's device).
pub async fn accept(dir: &Path, offer: &GrantOffer, pin: &str) -> Result<SplitIdentity, Error> {
    check_pin(pin)?;
    if dir.join(SPLIT_KEY_FILE).exists() {
        return Err(Error::Identity(format!(
            "{} already holds a split key; accept into another directory",
            dir.display()
        )));
    }
    let secret = std::fs::read_to_string(dir.join(RECEIVING_KEY_FILE)).map_err(|e| {
        Error::Identity(format!(
            "no receiving key in {} (make an invitation there first): {e}",
            dir.display()
        ))
    })?;
    let key = hex::decode(secret.trim())
        .ok()
        .and_then(|b| ChannelKey::from_bytes(&b).ok())
        .ok_or_else(|| Error::Identity(format!("{RECEIVING_KEY_FILE} is damaged")))?;
    let device: Device = std::fs::read_to_string(dir.join(DEVICE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| {
            Error::Identity(format!("no readable {DEVICE_FILE} in {}", dir.display()))
        })?;
    let enrollment = CosignerClient::accept_grant(&offer.package, &key).await?;
    let client = CosignerClient::new(&offer.package.cosigner_url, &offer.package.service_key)?;
    let file = SplitKeyFile::new(&enrollment, &client, pin)?;
    let identity = SplitIdentity::from_parts(&offer.certificate_pem, file, device)?;
    identity.save(dir)?;
    // The receiving key has done its one job.
    let _ = std::fs::remove_file(dir.join(RECEIVING_KEY_FILE));
    Ok(identity)
}

impl UnlockedSplit<'_> {
    /// 添加被授权人: grants this company certificate to the member of
    /// `invite` until `end` (RFC 3339).
    pub async fn grant(
        &self,
        invite: &GrantInvite,
        end: &str,
    ) -> Result<(GrantList, GrantOffer), Error> {
        let identity = self.identity;
        let receiving = point_from_hex(&invite.receiving_key)
            .map_err(|_| Error::Identity("the invitation's receiving key is not a point".into()))?;
        let certificate = CertificateInfo {
            serial: identity.serial_hex(),
            ca: bzt_crypto::issuer_string(identity.certificate()),
            certificate_type: CERTIFICATE_TYPE.into(),
        };
        let member = Delegate {
            name: invite.name.clone(),
            device: invite.device.id.clone(),
        };
        let (list, package) = self
            .client
            .grant(
                &identity.file.key_id,
                &self.d1,
                &identity.joint,
                member,
                certificate,
                end,
                &receiving,
            )
            .await?;
        let mut certificate_pem = identity.certificate_pem().to_owned();
        for c in &identity.chain_pem {
            certificate_pem.push_str(c);
        }
        Ok((
            list,
            GrantOffer {
                package,
                certificate_pem,
            },
        ))
    }

    /// 更改证书授权结束时间.
    pub async fn extend(&self, grant_id: &str, end: &str) -> Result<GrantList, Error> {
        let identity = self.identity;
        Ok(self
            .client
            .extend(
                &identity.file.key_id,
                &self.d1,
                &identity.joint,
                grant_id,
                end,
            )
            .await?)
    }

    /// 证书解除授权.
    pub async fn ungrant(&self, grant_id: &str) -> Result<GrantList, Error> {
        let identity = self.identity;
        Ok(self
            .client
            .ungrant(&identity.file.key_id, &self.d1, &identity.joint, grant_id)
            .await?)
    }

    /// The grants of this certificate and its 证书收回记录.
    pub async fn grants(&self) -> Result<GrantList, Error> {
        let identity = self.identity;
        Ok(self
            .client
            .grants(&identity.file.key_id, &self.d1, &identity.joint)
            .await?)
    }
}
