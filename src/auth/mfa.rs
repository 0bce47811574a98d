//! The gateway's own second factor: TOTP (RFC 6238 via totp-rs: HMAC-SHA-1, 6 digits,
//! 30 s steps, ±1 step) and single-use recovery codes.
//!
//! Owns secret generation, the otpauth URI and QR code for enrolment, strict parsing of
//! what a person types, the constant-time code check, and recovery code generation and
//! hashing. The clock is an argument (`now`, unix seconds); nothing here reads the system
//! clock, stores anything or counts failures: the caller records the matched step in the
//! store's replay guard, marks recovery codes used, and throttles wrong codes. It must not
//! log, and no secret appears in an error or in `Debug`.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use qrcodegen::{QrCode, QrCodeEcc};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

/// Seconds per TOTP step (RFC 6238 default; ASVS 5.0 6.5.5 wants a lifetime of ≤30 s).
pub const STEP_SECONDS: u64 = 30;
/// Digits per code; what every authenticator app shows by default.
pub const DIGITS: usize = 6;
/// Random bytes in a new TOTP secret: 160 bits, RFC 4226 §4's recommendation.
const SECRET_BYTES: usize = 20;
/// Shortest secret accepted from storage: 128 bits, RFC 4226 §4's minimum.
const MIN_SECRET_BYTES: usize = 16;
/// Recovery codes issued at enrolment.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Groups in a recovery code, and base32 characters per group: 25 × 5 bits = 125 bits.
const RECOVERY_GROUPS: usize = 5;
const RECOVERY_GROUP_LEN: usize = 5;
const RECOVERY_CHARS: usize = RECOVERY_GROUPS * RECOVERY_GROUP_LEN;
/// Lowercase RFC 4648 base32: no 0/1/8/9, so no O-vs-0 or l-vs-1 confusion.
const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Blank modules around the QR code; the QR specification asks for four.
const QR_QUIET_ZONE: i32 = 4;

/// Characters left as they are in the otpauth label and query: RFC 3986 unreserved.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Why an MFA input or record was refused. Messages name the problem, never the value.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// What was typed is not exactly six ASCII digits; counted as a failed attempt.
    #[error("the code must be exactly 6 digits")]
    InvalidCode,
    /// A stored secret is not base32 or is shorter than 128 bits (corrupt record).
    #[error("stored TOTP secret is invalid")]
    InvalidSecret,
    /// The otpauth URI does not fit in a QR code (issuer or account absurdly long).
    #[error("enrolment URI is too long for a QR code")]
    QrTooLong,
}

/// A TOTP shared secret. `Debug` prints `[redacted]`, the bytes are zeroized on drop, and
/// the only way out is [`TotpSecret::expose_base32`], at enrolment and when storing it.
pub struct TotpSecret {
    /// The raw key bytes HMAC-SHA-1 is keyed with.
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

impl TotpSecret {
    /// Reads a secret back from storage (RFC 4648 base32, either case, no padding) and
    /// refuses anything under 128 bits so a truncated record cannot weaken the factor.
    pub fn from_base32(encoded: &str) -> Result<Self, MfaError> {
        let upper = Zeroizing::new(encoded.to_ascii_uppercase());
        let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &upper)
            .map(Zeroizing::new)
            .ok_or(MfaError::InvalidSecret)?;
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(MfaError::InvalidSecret);
        }
        Ok(TotpSecret { bytes })
    }

    /// The secret as uppercase base32 without padding, the form authenticator apps accept
    /// for manual entry and the form to store. Zeroized when dropped.
    pub fn expose_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32::encode(
            base32::Alphabet::Rfc4648 { padding: false },
            &self.bytes,
        ))
    }

    fn totp(&self) -> TOTP {
        // totp-rs's `zeroize` feature wipes this copy when the TOTP is dropped.
        TOTP::new_unchecked(
            Algorithm::SHA1,
            DIGITS,
            1,
            STEP_SECONDS,
            self.bytes.to_vec(),
            None,
            String::new(),
        )
    }
}

/// A fresh 160-bit secret from the thread CSPRNG, for enrolment.
pub fn new_secret() -> TotpSecret {
    let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    rand::rng().fill_bytes(&mut bytes);
    TotpSecret { bytes }
}

/// The `otpauth://totp/...` URI authenticator apps import (Google Authenticator key URI
/// format), with every parameter written out so apps that ignore defaults still agree:
/// `otpauth://totp/Issuer:account?secret=...&issuer=...&algorithm=SHA1&digits=6&period=30`.
/// Issuer and account are percent-encoded (RFC 3986 unreserved characters kept, space as
/// `%20`, a `:` inside either as `%3A`). It contains the secret: show it once, at
/// enrolment, and never log it; hence the zeroizing return type.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> Zeroizing<String> {
    let issuer = utf8_percent_encode(issuer, URI_COMPONENT).to_string();
    let account = utf8_percent_encode(account, URI_COMPONENT);
    let secret = secret.expose_base32();
    Zeroizing::new(format!(
        "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        secret.as_str()
    ))
}

/// The QR code of `uri` as inline SVG markup (`<svg ...>...</svg>`, black modules on a
/// white background with the standard quiet zone, scaled by its `viewBox`). Inline SVG
/// rather than a PNG data URI so the enrolment page needs no `img-src data:` in its CSP and
/// no image encoder. Error correction level M. The markup embeds the secret: serve it with
/// `Cache-Control: no-store` and never log it.
pub fn qr_svg(uri: &str) -> Result<String, MfaError> {
    let qr = QrCode::encode_text(uri, QrCodeEcc::Medium).map_err(|_| MfaError::QrTooLong)?;
    let size = qr.size();
    let full = size + 2 * QR_QUIET_ZONE;
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + QR_QUIET_ZONE, y + QR_QUIET_ZONE));
            }
        }
    }
    Ok(format!(
        concat!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {full} {full}" "##,
            r##"shape-rendering="crispEdges" role="img" aria-label="QR code for your authenticator app">"##,
            r##"<rect width="{full}" height="{full}" fill="#ffffff"/>"##,
            r##"<path d="{path}" fill="#000000"/></svg>"##
        ),
        full = full,
        path = path
    ))
}

/// Parses what a person typed as a TOTP code: exactly six ASCII digits, with surrounding
/// ASCII whitespace ignored (pasted codes often carry a newline). Everything else is
/// refused, including fullwidth or other non-ASCII digits, inner spaces, signs, hex, NUL
/// and more or fewer digits, so that `str::parse` leniency (`+123456`) or Unicode digit
/// classes can never turn junk into a guess. Never panics.
pub fn parse_code(input: &str) -> Result<u32, MfaError> {
    let trimmed = input.trim_matches(|c: char| c.is_ascii_whitespace());
    let bytes = trimmed.as_bytes();
    if bytes.len() != DIGITS || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(MfaError::InvalidCode);
    }
    Ok(bytes.iter().fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0')))
}

/// The time step (`now / 30` plus -1, 0 or +1) whose code equals `code`, or None. All three
/// candidates are computed and compared in constant time; steps two or more away never
/// match (RFC 6238 §5.2 allows one step of network delay).
///
/// This answers "is the code right", not "may it be used". The caller must then advance
/// the store's replay guard to the returned step (`accept_totp_step(step)`, true only for a
/// step later than the last accepted one) and accept the login only if that succeeds, so
/// neither the same code nor an older one still inside the window can be used after it
/// (NIST 800-63B §5.1.4.2, RFC 6238 §5.2). The guard must keep the last step for at least
/// 90 s (three steps). When a code happens to match two steps, the latest is returned, so a
/// replay always maps to a step at or before the one recorded.
pub fn matching_step(secret: &TotpSecret, code: u32, now: u64) -> Option<u64> {
    let totp = secret.totp();
    let current = now / STEP_SECONDS;
    let mut matched = None;
    for step in [current.checked_sub(1), Some(current), current.checked_add(1)]
        .into_iter()
        .flatten()
    {
        let expected = code_for(&totp, step);
        if bool::from(expected.ct_eq(&code)) {
            matched = Some(step);
        }
    }
    matched
}

/// The code for one time step (`unix_seconds / 30`), for tests and the demo tooling. A step
/// too large to express in seconds gives `u32::MAX`, which no parsed code equals.
pub fn code_at(secret: &TotpSecret, step: u64) -> u32 {
    code_for(&secret.totp(), step)
}

fn code_for(totp: &TOTP, step: u64) -> u32 {
    match step.checked_mul(STEP_SECONDS) {
        // totp-rs returns exactly DIGITS ASCII digits; a failure cannot happen and would
        // give a value no parsed code can equal.
        Some(time) => totp.generate(time).parse().unwrap_or(u32::MAX),
        None => u32::MAX,
    }
}

/// Ten fresh recovery codes, shown once at enrolment. Each is 25 random lowercase base32
/// characters in five groups of five joined by `-` (`abcde-fghij-klmno-pqrst-uvw23`):
/// 125 bits, so a plain SHA-256 is enough to store them (ASVS 5.0 6.5.2 asks for a slow,
/// salted hash only below 112 bits). Store [`recovery_code_hash`] of each, never the code.
pub fn new_recovery_codes() -> Vec<String> {
    let mut rng = rand::rng();
    (0..RECOVERY_CODE_COUNT)
        .map(|_| {
            let mut random = Zeroizing::new([0u8; RECOVERY_CHARS]);
            rng.fill_bytes(random.as_mut());
            let mut code = String::with_capacity(RECOVERY_CHARS + RECOVERY_GROUPS - 1);
            for (i, byte) in random.iter().enumerate() {
                if i > 0 && i % RECOVERY_GROUP_LEN == 0 {
                    code.push('-');
                }
                // 32 divides 256, so taking the low five bits is unbiased.
                code.push(char::from(BASE32_LOWER[usize::from(byte & 0x1f)]));
            }
            code
        })
        .collect()
}

/// SHA-256 of the normalised code (ASCII-lowercased, dashes and ASCII whitespace removed),
/// so a person may type it with or without dashes, in either case. This is the value to
/// store and to look a submitted code up by; mark it used atomically on first success.
/// Non-ASCII characters are kept as they are and so never match an issued code.
pub fn recovery_code_hash(code: &str) -> [u8; 32] {
    let normalised = normalise_recovery_code(code);
    Sha256::digest(normalised.as_bytes()).into()
}

/// True when `input` has the shape of a recovery code (25 base32 characters once dashes
/// and whitespace are removed), so the MFA form can take either a TOTP code or a recovery
/// code in one field without trying both.
pub fn looks_like_recovery_code(input: &str) -> bool {
    // Bounded first so a 10 MB field is not copied to be normalised.
    if input.len() > 4 * RECOVERY_CHARS {
        return false;
    }
    let normalised = normalise_recovery_code(input);
    normalised.len() == RECOVERY_CHARS && normalised.bytes().all(|b| BASE32_LOWER.contains(&b))
}

fn normalise_recovery_code(code: &str) -> Zeroizing<String> {
    Zeroizing::new(
        code.chars()
            .filter(|c| *c != '-' && !c.is_ascii_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// RFC 6238 Appendix B's SHA-1 seed, ASCII "12345678901234567890", in base32.
    const RFC_SEED_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_base32(RFC_SEED_BASE32).unwrap()
    }

    #[test]
    fn rfc6238_sha1_vectors_truncated_to_six_digits() {
        // (time, 8-digit code from RFC 6238 Appendix B). Six digits are the same dynamic
        // truncation modulo 10^6, i.e. the last six digits.
        let vectors: [(u64, u32); 6] = [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ];
        let secret = rfc_secret();
        for (time, eight) in vectors {
            let six = eight % 1_000_000;
            assert_eq!(code_at(&secret, time / STEP_SECONDS), six, "t={time}");
            assert_eq!(matching_step(&secret, six, time), Some(time / STEP_SECONDS), "t={time}");
        }
    }

    #[test]
    fn one_step_of_skew_is_accepted_two_are_not() {
        let secret = new_secret();
        let now = 1_700_000_015;
        let step = now / STEP_SECONDS;
        for offset in [-1i64, 0, 1] {
            let s = step.checked_add_signed(offset).unwrap();
            let code = code_at(&secret, s);
            // Another step could share the code by chance (1 in 10^6); then the later wins.
            let got = matching_step(&secret, code, now).unwrap();
            assert!(got >= s, "offset {offset}: {got} < {s}");
        }
        for offset in [-3i64, -2, 2, 3] {
            let s = step.checked_add_signed(offset).unwrap();
            let code = code_at(&secret, s);
            let near: Vec<u32> = (step - 1..=step + 1).map(|n| code_at(&secret, n)).collect();
            if !near.contains(&code) {
                assert_eq!(matching_step(&secret, code, now), None, "offset {offset}");
            }
        }
    }

    #[test]
    fn same_code_in_the_next_step_maps_to_the_same_step_for_the_replay_guard() {
        let secret = new_secret();
        let now = 1_700_000_000;
        let code = code_at(&secret, now / STEP_SECONDS);
        let first = matching_step(&secret, code, now);
        let later = matching_step(&secret, code, now + STEP_SECONDS);
        assert_eq!(first, later);
    }

    #[test]
    fn wrong_code_and_clock_edges_do_not_match_or_panic() {
        let secret = rfc_secret();
        let right = code_at(&secret, 1);
        assert_eq!(matching_step(&secret, (right + 1) % 1_000_000, 59), None);
        assert_eq!(matching_step(&secret, 1_000_000, 59), None);
        assert_eq!(matching_step(&secret, u32::MAX, 59), None);
        // Step 0 has no step -1; the largest clock value has no step +1 in seconds.
        assert_eq!(matching_step(&secret, code_at(&secret, 0), 0), Some(0));
        let _ = matching_step(&secret, 123_456, u64::MAX);
        assert_eq!(code_at(&secret, u64::MAX), u32::MAX);
    }

    #[test]
    fn new_secrets_are_160_bits_base32_and_distinct() {
        let a = new_secret();
        let b = new_secret();
        let a32 = a.expose_base32();
        assert_eq!(a32.len(), 32); // 160 bits / 5
        assert!(
            a32.bytes()
                .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c))
        );
        assert!(!a32.contains('='));
        assert_ne!(a32, b.expose_base32());
        let back = TotpSecret::from_base32(&a32.to_lowercase()).unwrap();
        assert_eq!(back.expose_base32(), a32);
    }

    #[test]
    fn stored_secret_must_be_base32_and_at_least_128_bits() {
        assert!(TotpSecret::from_base32("").is_err());
        assert!(TotpSecret::from_base32("GEZDGNBVGY3TQOJQ").is_err()); // 80 bits
        assert!(TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ!").is_err());
        assert!(TotpSecret::from_base32("ΓEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").is_err());
        assert!(TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY").is_ok()); // 130 bits → 16 bytes
    }

    #[test]
    fn debug_and_errors_never_show_the_secret() {
        let secret = rfc_secret();
        let shown = format!("{secret:?}");
        assert_eq!(shown, "TotpSecret([redacted])");
        assert!(!shown.contains("GEZDG"));
        for e in [MfaError::InvalidCode, MfaError::InvalidSecret, MfaError::QrTooLong] {
            assert!(!format!("{e} {e:?}").contains("GEZDG"));
        }
    }

    #[test]
    fn otpauth_uri_is_complete_and_percent_encoded() {
        let secret = rfc_secret();
        let uri = otpauth_uri(&secret, "Acme Corp", "alice@example.com");
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/Acme%20Corp:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Acme%20Corp&algorithm=SHA1&digits=6&period=30"
        );
        let odd = otpauth_uri(&secret, "A:B&C=D?", "bob:ü/#%");
        assert_eq!(
            odd.as_str(),
            "otpauth://totp/A%3AB%26C%3DD%3F:bob%3A%C3%BC%2F%23%25?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=A%3AB%26C%3DD%3F&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn otpauth_uri_is_read_back_by_totp_rs() {
        let secret = new_secret();
        let uri = otpauth_uri(&secret, "Portcullis Demo", "alice smith@example.com");
        let parsed = TOTP::from_url(uri.as_str()).unwrap();
        assert_eq!(parsed.issuer.as_deref(), Some("Portcullis Demo"));
        assert_eq!(parsed.account_name, "alice smith@example.com");
        assert_eq!(parsed.digits, 6);
        assert_eq!(parsed.step, 30);
        assert_eq!(parsed.algorithm, Algorithm::SHA1);
        assert_eq!(
            parsed.generate(1_700_000_000),
            format!("{:06}", code_at(&secret, 1_700_000_000 / 30))
        );
    }

    #[test]
    fn qr_svg_is_inline_svg_markup() {
        let secret = new_secret();
        let uri = otpauth_uri(&secret, "Portcullis", "alice@example.com");
        let svg = qr_svg(&uri).unwrap();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 "),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains("<path d=\"M"));
        // The three finder patterns alone contribute 3 × 33 dark modules.
        assert!(svg.matches('z').count() >= 99);
        assert!(!svg.contains("otpauth"), "the URI is encoded, not embedded as text");
        assert!(matches!(qr_svg(&"x".repeat(10_000)), Err(MfaError::QrTooLong)));
    }

    #[test]
    fn parse_code_table() {
        let ok: &[(&str, u32)] = &[
            ("123456", 123_456),
            ("000000", 0),
            ("000001", 1),
            ("999999", 999_999),
            (" 123456", 123_456),
            ("123456\n", 123_456),
            ("\t\r\n 042042 \r\n", 42_042),
        ];
        for (input, expected) in ok {
            assert_eq!(parse_code(input).unwrap(), *expected, "{input:?}");
        }
        let bad: &[&str] = &[
            "",
            " ",
            "12345",
            "1234567",
            "12345 6",
            "123 456",
            "12-345",
            "+12345",
            "+123456",
            "-123456",
            "0x1E240",
            "1e5000",
            "12345a",
            "abcdef",
            "１２３４５６",
            "12345６",
            "١٢٣٤٥٦",
            "१२३४५६",
            "¹²³⁴⁵⁶",
            "123456\0",
            "\u{0}123456",
            "12\u{0}3456",
            "\u{a0}123456",
            "123456\u{2003}",
            "\u{feff}123456",
            "123456\u{301}",
            "\u{202e}654321",
            "12345\u{fffd}",
            "123456123456",
            "000000000000000000000000000000123456",
        ];
        for input in bad {
            assert!(matches!(parse_code(input), Err(MfaError::InvalidCode)), "{input:?}");
        }
    }

    #[test]
    fn parse_code_never_panics_on_nasty_input() {
        let big_digits = "1".repeat(10 * 1024);
        let big_spaces = format!("{}123456{}", " ".repeat(5000), " ".repeat(5000));
        let big_mixed: String = "１a\u{0}٣ 🦀\u{fffd}".chars().cycle().take(10 * 1024).collect();
        // Whitespace-padded to 10 KB is still a valid code: trimming is bounded by the input.
        assert_eq!(parse_code(&big_spaces).unwrap(), 123_456);
        assert!(parse_code(&big_digits).is_err());
        assert!(parse_code(&big_mixed).is_err());
        // Every single char from a spread of code points, and short mixtures of them.
        for cp in (0u32..0x11_0000).step_by(97) {
            if let Some(c) = char::from_u32(cp) {
                let _ = parse_code(&c.to_string());
                let _ = parse_code(&format!("12345{c}"));
                let _ = parse_code(&format!("{c}123456{c}"));
            }
        }
        // Invalid UTF-8 cannot reach a &str; what a lossy decode makes of it is refused.
        let lossy = String::from_utf8_lossy(&[0x31, 0x32, 0xff, 0xfe, 0x33, 0x34, 0x35, 0x36]);
        assert!(parse_code(&lossy).is_err());
    }

    #[test]
    fn recovery_codes_are_ten_unique_and_human_shaped() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        let unique: HashSet<&String> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
        for code in &codes {
            let groups: Vec<&str> = code.split('-').collect();
            assert_eq!(groups.len(), 5, "{code}");
            assert!(groups.iter().all(|g| g.len() == 5), "{code}");
            assert!(
                groups.iter().all(|g| g.bytes().all(|b| BASE32_LOWER.contains(&b))),
                "{code}"
            );
            assert!(looks_like_recovery_code(code));
            assert!(parse_code(code).is_err());
        }
        // Another batch shares nothing with the first.
        let again = new_recovery_codes();
        assert!(again.iter().all(|c| !unique.contains(c)));
    }

    #[test]
    fn recovery_code_characters_are_spread_over_the_alphabet() {
        // 1000 codes × 25 chars: each of the 32 characters appears ~781 times. Would fail
        // if the mapping were biased or stuck (e.g. only letters).
        let mut counts = [0usize; 32];
        for _ in 0..100 {
            for code in new_recovery_codes() {
                for b in code.bytes().filter(|b| *b != b'-') {
                    let i = BASE32_LOWER.iter().position(|a| *a == b).unwrap();
                    counts[i] += 1;
                }
            }
        }
        assert!(counts.iter().all(|n| (500..1100).contains(n)), "{counts:?}");
    }

    #[test]
    fn recovery_hash_normalises_dashes_spaces_and_case() {
        let code = "abcde-fghij-klmno-pqrst-uvw23";
        let expected: [u8; 32] = Sha256::digest(b"abcdefghijklmnopqrstuvw23").into();
        for typed in [
            code,
            "abcdefghijklmnopqrstuvw23",
            "ABCDE-FGHIJ-KLMNO-PQRST-UVW23",
            " abcde fghij klmno pqrst uvw23\n",
            "abcde--fghij-klmno-pqrst-uvw23",
        ] {
            assert_eq!(recovery_code_hash(typed), expected, "{typed:?}");
            assert!(looks_like_recovery_code(typed), "{typed:?}");
        }
        assert_ne!(recovery_code_hash("abcde-fghij-klmno-pqrst-uvw24"), expected);
        // Unicode lookalikes are not folded onto ASCII (Kelvin sign K, fullwidth a).
        assert_ne!(
            recovery_code_hash("\u{212a}bcde-fghij-klmno-pqrst-uvw23"),
            recovery_code_hash("kbcde-fghij-klmno-pqrst-uvw23")
        );
        assert_ne!(recovery_code_hash("ａbcde-fghij-klmno-pqrst-uvw23"), expected);
    }

    #[test]
    fn looks_like_recovery_code_refuses_other_shapes() {
        for input in [
            "",
            "123456",
            "abcde-fghij-klmno-pqrst",
            "abcde-fghij-klmno-pqrst-uvw234",
            "abcde-fghij-klmno-pqrst-uvw01",
            "ａbcde-fghij-klmno-pqrst-uvw23",
            "abcde-fghij-klmno-pqrst-uvw2\u{0}",
        ] {
            assert!(!looks_like_recovery_code(input), "{input:?}");
        }
        assert!(!looks_like_recovery_code(&"a".repeat(10 * 1024)));
        assert!(!looks_like_recovery_code(&"-".repeat(10 * 1024)));
    }
}
