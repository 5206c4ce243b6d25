//! Text that the broker forwards to a person's screen (titles, details,
//! device names, the requester's user agent).
//!
//! The phone shows what the RP wrote, and the user approves what they read.
//! A control character can drive a terminal, a bidi override (U+202E) can
//! make "退回 001" read as something else, and zero-width characters make two
//! different titles look the same. None of them has a use in a title, so
//! such text is refused at the door with the field's name, rather than
//! leaving each phone app to know it must blank them (issue 13).

use crate::error::DomainError;
use unicode_general_category::{get_general_category, GeneralCategory};

/// May the text span lines? Only longer, descriptive fields may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    One,
    /// `\n` allowed (and nothing else of the kind: no `\r`, no U+2028).
    Many,
}

/// Refuses control characters (Unicode Cc), format characters (Cf: bidi
/// embeddings, overrides, isolates and marks, zero-width spaces and joiners,
/// the BOM, soft hyphens, tag characters) and line or paragraph separators
/// (U+2028, U+2029); `\n` only with [`Lines::Many`]. The error is
/// `invalid_request` and names `field`, the character and where it is.
pub fn check_display_text(field: &str, value: &str, lines: Lines) -> Result<(), DomainError> {
    for (position, c) in value.chars().enumerate() {
        if c == '\n' && lines == Lines::Many {
            continue;
        }
        let what = match get_general_category(c) {
            GeneralCategory::Control => "a control character",
            GeneralCategory::Format => {
                if is_bidi_control(c) {
                    "a bidirectional-text control"
                } else {
                    "an invisible formatting character"
                }
            }
            GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
                "a line or paragraph separator"
            }
            _ => continue,
        };
        return Err(DomainError::invalid(format!(
            "`{field}` contains U+{:04X} ({what}) at character {}: text shown to the user \
             may not hold control, bidi or invisible formatting characters{}",
            c as u32,
            position + 1,
            if lines == Lines::Many {
                " (only `\\n` breaks lines)"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// `value` made fit to show: refused characters dropped, cut to `max_chars`.
/// For text the broker reads from a browser's headers, which it must not
/// refuse the browser for, but must not forward as it came either.
pub fn displayable(value: &str, max_chars: usize) -> String {
    value
        .chars()
        .filter(|c| {
            !matches!(
                get_general_category(*c),
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            )
        })
        .take(max_chars)
        .collect()
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_is_made_displayable() {
        assert_eq!(displayable("Mozilla\u{202E}/5.0\r\n", 100), "Mozilla/5.0");
        assert_eq!(displayable(&"a".repeat(600), 512).len(), 512);
    }

    #[test]
    fn ordinary_chinese_and_latin_text_passes() {
        for ok in [
            "登录 示例交易平台",
            "第1页 / 共3页",
            "Bid #42 — ¥1,000.00",
            "😀 签章",
        ] {
            assert!(
                check_display_text("display.title", ok, Lines::One).is_ok(),
                "{ok}"
            );
        }
        assert!(check_display_text("display.detail", "一\n二", Lines::Many).is_ok());
    }

    #[test]
    fn controls_bidi_and_invisible_characters_are_refused_by_name() {
        let refused = [
            '\u{1b}',
            '\t',
            '\r',
            '\u{7f}',
            '\u{85}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{2028}',
            '\u{2029}',
            '\u{FEFF}',
            '\u{2060}',
            '\u{00AD}',
            '\u{061C}',
            '\u{E0041}',
        ];
        for c in refused {
            let text = format!("退回{c}001");
            let e = check_display_text("display.title", &text, Lines::Many).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::InvalidRequest);
            assert!(e.message.starts_with("`display.title` contains U+"), "{e}");
            assert!(e.message.contains(&format!("{:04X}", c as u32)), "{e}");
            assert!(e.message.contains("at character 3"), "{e}");
        }
        let e = check_display_text("device.name", "a\u{202E}b", Lines::One).unwrap_err();
        assert!(e.message.contains("bidirectional"), "{e}");
        let e = check_display_text("display.title", "a\nb", Lines::One).unwrap_err();
        assert!(e.message.contains("U+000A"), "{e}");
    }
}
