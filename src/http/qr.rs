//! QR rendering (error-correction level M, as docs/protocol.md asks).

use crate::error::ApiError;
use qrcode::{EcLevel, QrCode};

fn code(text: &str) -> Result<QrCode, ApiError> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|e| {
        tracing::error!(error = %e, "QR encoding failed");
        ApiError::internal()
    })
}

pub fn svg(text: &str) -> Result<String, ApiError> {
    Ok(code(text)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

pub fn png(text: &str) -> Result<Vec<u8>, ApiError> {
    let img = code(text)?
        .render::<image::Luma<u8>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| {
            tracing::error!(error = %e, "PNG encoding failed");
            ApiError::internal()
        })?;
    Ok(out.into_inner())
}
