//! A one-page OFD document (GB/T 33190) carrying one seal signature (GM/T 0099 layout), so the
//! bid tool's stamp can be opened in an OFD reader.
//!
//! Two steps, because the signature covers a file that names the others: [`OnePageOfd::new`]
//! lays out the document and `Doc_0/Signs/Sign_0/Signature.xml` (the SM3 of every other file,
//! the stamp's position); its SM3 ([`OnePageOfd::data_hash`]) is what the seal signature's
//! `dataHash` must be, with [`PROPERTY_INFO`] as `propertyInfo`. [`OnePageOfd::finish`] then adds
//! the `SES_Signature` as `SignedValue.dat` and writes the archive.
//!
//! The archive is a ZIP with stored (uncompressed) entries, written here: the tree has no ZIP
//! crate, and a stored archive is a few headers and CRC-32s (`crc32fast`), which OFD readers
//! accept as any ZIP.

use sm3::{Digest, Sm3};
use time::OffsetDateTime;

/// `propertyInfo` of the seal signature: the path of the file it protects.
pub const PROPERTY_INFO: &str = "/Doc_0/Signs/Sign_0/Signature.xml";
/// SM3's OID, the `CheckMethod` of the references.
const OID_SM3: &str = "1.2.156.10197.1.401";
const NS: &str = "http://www.ofdspec.org/2016";

/// Where the stamp goes on the page, millimetres from the top left corner of an A4 page.
#[derive(Clone, Copy, Debug)]
pub struct StampBox {
    pub x_mm: f64,
    pub y_mm: f64,
    pub width_mm: f64,
    pub height_mm: f64,
}

/// A laid-out document waiting for its seal signature.
#[derive(Clone, Debug)]
pub struct OnePageOfd {
    /// Path and content of every file but `SignedValue.dat`, in archive order.
    files: Vec<(String, Vec<u8>)>,
    signature_xml: Vec<u8>,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl OnePageOfd {
    /// Lays out an A4 page with `title` and `lines` (宋体, 5 mm), the stamp at `stamp`, signed at
    /// `at` (written into `SignatureDateTime`).
    pub fn new(title: &str, lines: &[&str], stamp: StampBox, at: OffsetDateTime) -> Self {
        let date = at
            .format(time::macros::format_description!("[year]-[month]-[day]"))
            .unwrap_or_default();
        let ofd_xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ofd:OFD xmlns:ofd="{NS}" Version="1.0" DocType="OFD"><ofd:DocBody><ofd:DocInfo><ofd:DocID>{}</ofd:DocID><ofd:Title>{}</ofd:Title><ofd:CreationDate>{date}</ofd:CreationDate><ofd:Creator>bzt</ofd:Creator></ofd:DocInfo><ofd:DocRoot>Doc_0/Document.xml</ofd:DocRoot><ofd:Signatures>Doc_0/Signs/Signatures.xml</ofd:Signatures></ofd:DocBody></ofd:OFD>
"#,
            hex_id(title, at),
            xml_escape(title)
        );
        let document_xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ofd:Document xmlns:ofd="{NS}"><ofd:CommonData><ofd:MaxUnitID>{}</ofd:MaxUnitID><ofd:PageArea><ofd:PhysicalBox>0 0 210 297</ofd:PhysicalBox></ofd:PageArea><ofd:PublicRes>PublicRes.xml</ofd:PublicRes></ofd:CommonData><ofd:Pages><ofd:Page ID="1" BaseLoc="Pages/Page_0/Content.xml"/></ofd:Pages></ofd:Document>
"#,
            4 + lines.len() + 1
        );
        let public_res = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ofd:Res xmlns:ofd="{NS}" BaseLoc="Res"><ofd:Fonts><ofd:Font ID="2" FontName="宋体" FamilyName="宋体"/></ofd:Fonts></ofd:Res>
"#
        );
        let mut objects = String::new();
        let mut id = 4;
        let mut text = |s: &str, x: f64, y: f64, size: f64| {
            objects.push_str(&format!(
                r#"<ofd:TextObject ID="{id}" Boundary="{x} {y} {w} {h}" Font="2" Size="{size}"><ofd:TextCode X="0" Y="{size}">{}</ofd:TextCode></ofd:TextObject>"#,
                xml_escape(s),
                w = 210.0 - x,
                h = size * 1.4,
            ));
            id += 1;
        };
        text(title, 80.0, 25.0, 7.0);
        for (i, line) in lines.iter().enumerate() {
            text(line, 20.0, 45.0 + 10.0 * i as f64, 5.0);
        }
        let content_xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ofd:Page xmlns:ofd="{NS}"><ofd:Content><ofd:Layer ID="3">{objects}</ofd:Layer></ofd:Content></ofd:Page>
"#
        );
        let signatures_xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ofd:Signatures xmlns:ofd="{NS}"><ofd:MaxSignId>1</ofd:MaxSignId><ofd:Signature ID="1" Type="Seal" BaseLoc="Sign_0/Signature.xml"/></ofd:Signatures>
"#
        );
        let files: Vec<(String, Vec<u8>)> = vec![
            ("OFD.xml".into(), ofd_xml.into_bytes()),
            ("Doc_0/Document.xml".into(), document_xml.into_bytes()),
            ("Doc_0/PublicRes.xml".into(), public_res.into_bytes()),
            (
                "Doc_0/Pages/Page_0/Content.xml".into(),
                content_xml.into_bytes(),
            ),
            (
                "Doc_0/Signs/Signatures.xml".into(),
                signatures_xml.into_bytes(),
            ),
        ];
        // Signatures.xml lists the signatures and changes when one is added: not protected.
        let references: String = files
            .iter()
            .filter(|(p, _)| !p.ends_with("Signatures.xml"))
            .map(|(p, data)| {
                format!(
                    r#"<ofd:Reference FileRef="/{p}"><ofd:CheckValue>{}</ofd:CheckValue></ofd:Reference>"#,
                    b64(&Sm3::digest(data))
                )
            })
            .collect();
        let when = at
            .format(time::macros::format_description!(
                "[year][month][day][hour][minute][second]Z"
            ))
            .unwrap_or_default();
        let signature_xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ofd:Signature xmlns:ofd="{NS}"><ofd:SignedInfo><ofd:Provider ProviderName="bzt" Version="{}" Company="bzt"/><ofd:SignatureMethod>{}</ofd:SignatureMethod><ofd:SignatureDateTime>{when}</ofd:SignatureDateTime><ofd:References CheckMethod="{OID_SM3}">{references}</ofd:References><ofd:StampAnnot ID="1" PageRef="1" Boundary="{} {} {} {}"/></ofd:SignedInfo><ofd:SignedValue>/Doc_0/Signs/Sign_0/SignedValue.dat</ofd:SignedValue></ofd:Signature>
"#,
            env!("CARGO_PKG_VERSION"),
            crate::OID_SM2_WITH_SM3,
            stamp.x_mm,
            stamp.y_mm,
            stamp.width_mm,
            stamp.height_mm
        )
        .into_bytes();
        Self {
            files,
            signature_xml,
        }
    }

    /// `Signature.xml`, the file the seal signature protects.
    pub fn signature_xml(&self) -> &[u8] {
        &self.signature_xml
    }

    /// SM3 of `Signature.xml`: the seal signature's `dataHash`.
    pub fn data_hash(&self) -> [u8; 32] {
        Sm3::digest(&self.signature_xml).into()
    }

    /// The OFD archive with `ses_signature` (DER) as `SignedValue.dat`.
    pub fn finish(mut self, ses_signature: &[u8]) -> Vec<u8> {
        self.files.push((
            "Doc_0/Signs/Sign_0/Signature.xml".into(),
            self.signature_xml,
        ));
        self.files.push((
            "Doc_0/Signs/Sign_0/SignedValue.dat".into(),
            ses_signature.to_vec(),
        ));
        stored_zip(&self.files)
    }
}

/// A document id: 32 hex digits from the title and the time (unique enough for a demo file).
fn hex_id(title: &str, at: OffsetDateTime) -> String {
    let mut h = Sm3::new();
    h.update(title.as_bytes());
    h.update(at.unix_timestamp_nanos().to_be_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A ZIP archive of `files`, stored (method 0), UTF-8 names, no timestamps (1980-01-01).
fn stored_zip(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let crc = crc32fast::hash(data);
        let offset = out.len() as u32;
        let (size, name_len) = (data.len() as u32, name.len() as u16);
        // Local file header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0x0800u16.to_le_bytes()); // flags: UTF-8 names
        out.extend_from_slice(&0u16.to_le_bytes()); // stored
        out.extend_from_slice(&0u16.to_le_bytes()); // time
        out.extend_from_slice(&0x0021u16.to_le_bytes()); // date 1980-01-01
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        // Central directory entry.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&0x0800u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0x0021u16.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&name_len.to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_offset, cd_size, n) = (out.len() as u32, central.len() as u32, files.len() as u16);
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // disk numbers
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
