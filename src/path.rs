//! Request-path normalisation: turns the path of an origin-form request target into the
//! one canonical form the gateway both authorises and forwards, plus the other readings a
//! backend might apply to that same path, so `policy` can refuse paths whose readings
//! disagree.
//!
//! Pure string work: no I/O, no route rules, no HTTP types. The caller splits off the query
//! (`?…`) before calling; deciding what a path may reach belongs to `policy`.
//!
//! # Canonical form
//! 1. The path must start with `/` and contain only visible ASCII (`!`..`~`, minus `?` and
//!    `#`); anything else must arrive percent-encoded.
//! 2. Escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded; every other
//!    escape stays encoded with upper-case hex (`%2f` → `%2F`).
//! 3. Dot segments are resolved (RFC 3986 §5.2.4, never above the root) after empty
//!    segments are dropped (`//` collapses first, so `/a//../b` is `/b`); a trailing `/`
//!    is kept.
//!
//! Refused outright: malformed escapes, control characters raw or encoded, escapes that do
//! not decode to UTF-8 (overlong `%c0%ae` and friends), and dot segments carrying a path
//! parameter (`..;`, `.;x`), which some servlet containers resolve as `..`.

use percent_encoding::percent_decode_str;

/// A request path in the form the gateway acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalisedPath {
    /// The one form the gateway authorises AND forwards upstream, so the upstream receives
    /// byte-identical what was authorised.
    pub canonical: String,
    /// Other readings a backend might apply (encoded slash/backslash as `/`, `;params`
    /// and `%3Bparams` stripped from segments, both); empty when none differ from
    /// `canonical`. Each is itself normalised.
    pub alternates: Vec<String>,
}

/// Why a path was refused; the caller answers `400`. Messages never echo the input, so
/// they are safe to show a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Relative or empty paths have no meaning in an origin-form request.
    #[error("path must start with '/'")]
    NotAbsolute,
    /// Space, non-ASCII, `?` or `#` sent raw: clients must percent-encode them, and
    /// servers disagree on what they mean when they do not.
    #[error("path contains a character that must be percent-encoded")]
    InvalidCharacter,
    /// NUL and other control characters truncate or split paths in many backends.
    #[error("path contains a control character")]
    ControlCharacter,
    /// A `%` not followed by two hex digits is decoded differently by every server.
    #[error("path contains a malformed percent-escape")]
    MalformedEscape,
    /// Overlong or truncated UTF-8 (`%c0%ae`) is read as `.` by some decoders.
    #[error("path does not decode to valid UTF-8")]
    InvalidUtf8,
    /// `..;` / `.;x`: servlet containers strip the parameter and then resolve the dots.
    #[error("path contains a dot segment with a parameter")]
    DotSegmentWithParameter,
}

/// Normalises `raw`, the path component of an origin-form request target (no query).
///
/// Why one function: the same canonical string is checked against the route table and
/// sent upstream, and its alternates let the policy refuse paths a backend could read
/// differently.
pub fn normalise(raw: &str) -> Result<NormalisedPath, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(raw) {
        return Ok(NormalisedPath {
            canonical: raw.to_string(),
            alternates: Vec::new(),
        });
    }
    let decoded = decode_unreserved(raw)?;
    check_full_decoding(raw)?;
    let canonical = resolve(&decoded)?;

    let mut alternates: Vec<String> = Vec::new();
    // Readings of what was received and of what is forwarded: an intermediary may see the
    // former, the upstream sees the latter.
    for base in [decoded.as_str(), canonical.as_str()] {
        let slashed = slashes_as_separators(base);
        let stripped = strip_parameters(base);
        let readings = [
            strip_parameters(&slashed),
            slashes_as_separators(&stripped),
            slashed,
            stripped,
        ];
        for reading in &readings {
            let resolved = resolve(reading)?;
            if resolved != canonical && !alternates.contains(&resolved) {
                alternates.push(resolved);
            }
        }
    }
    Ok(NormalisedPath { canonical, alternates })
}

/// True for the common path that every reading leaves as it is: visible ASCII with no
/// escape, backslash, parameter, query or fragment character, no empty segment and no
/// dot segment. Such a path is its own canonical form with no alternates, so the full
/// algorithm (several allocations per reading) is skipped on the request path.
fn is_plain(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let clean = bytes
        .iter()
        .all(|&b| b.is_ascii_graphic() && !matches!(b, b'%' | b'\\' | b';' | b'?' | b'#'));
    clean
        && raw.split('/').skip(1).enumerate().all(|(i, seg)| match seg {
            "" => i + 1 == raw.split('/').count() - 1,
            "." | ".." => false,
            _ => true,
        })
}

/// Validates every byte and escape, decodes escapes of unreserved characters and
/// upper-cases the hex of the others.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'%' => {
                let high = bytes.next().and_then(hex_value);
                let low = bytes.next().and_then(hex_value);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(PathError::MalformedEscape);
                };
                let value = (high << 4) | low;
                if is_control(value) {
                    return Err(PathError::ControlCharacter);
                }
                if is_unreserved(value) {
                    out.push(char::from(value));
                } else {
                    out.push('%');
                    out.push(hex_digit(high));
                    out.push(hex_digit(low));
                }
            }
            b if is_control(b) => return Err(PathError::ControlCharacter),
            b' ' | b'?' | b'#' | 0x80..=0xFF => return Err(PathError::InvalidCharacter),
            b => out.push(char::from(b)),
        }
    }
    Ok(out)
}

/// The fully decoded path must be UTF-8 without control characters (this also catches
/// C1 controls such as `%C2%85`, which no byte-level check sees).
fn check_full_decoding(raw: &str) -> Result<(), PathError> {
    let text = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::InvalidUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    Ok(())
}

/// Drops empty and `.` segments and resolves `..` (never above the root); keeps a
/// trailing `/` when the last segment was empty or a dot segment, as RFC 3986 does.
fn resolve(path: &str) -> Result<String, PathError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in rest.split('/') {
        if is_dot_with_parameter(segment) {
            return Err(PathError::DotSegmentWithParameter);
        }
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// `..;x`, `.;`, and the same with `%3B`: the part before the first parameter delimiter is
/// a dot segment. `%3B` counts too because some backends decode before splitting.
fn is_dot_with_parameter(segment: &str) -> bool {
    parameter_start(segment)
        .and_then(|at| segment.get(..at))
        .is_some_and(|head| head == "." || head == "..")
}

/// Where a segment's parameters start: the first `;` or `%3B` (hex already upper-case).
/// One definition for both readings that care, so they cannot drift apart.
fn parameter_start(segment: &str) -> Option<usize> {
    [segment.find(';'), segment.find("%3B")].into_iter().flatten().min()
}

/// The reading of a backend that decodes `%2F`/`%5C` before routing, or treats `\` as `/`.
/// Input hex is already upper-case, and every `%` in it starts an escape.
fn slashes_as_separators(path: &str) -> String {
    path.replace("%2F", "/").replace("%5C", "/").replace('\\', "/")
}

/// The reading of a backend that drops `;parameters` from every segment (servlet
/// containers, some Spring setups). An encoded `%3B` starts a parameter too, as in
/// `is_dot_with_parameter`: a backend that decodes before splitting reads `/admin%3Bx/y`
/// as `/admin/y`. Input hex is already upper-case.
fn strip_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            parameter_start(segment)
                .and_then(|at| segment.get(..at))
                .unwrap_or(segment)
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7F
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).map_or('0', |c| c.to_ascii_uppercase())
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    /// The fast path must give exactly what the full algorithm gives.
    #[test]
    fn plain_paths_match_the_full_algorithm() {
        let pieces = ["a", "b.c", "~x", "-", "_", ".", "..", "", "A", "x:y", "@", "!$&'()*+,="];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for trailing in ["", "/"] {
                        let path = format!("/{a}/{b}/{c}{trailing}");
                        if !is_plain(&path) {
                            continue;
                        }
                        checked += 1;
                        let fast = normalise(&path).unwrap();
                        let full = {
                            let decoded = decode_unreserved(&path).unwrap();
                            resolve(&decoded).unwrap()
                        };
                        assert_eq!(fast.canonical, full, "{path}");
                        assert_eq!(fast.canonical, path, "{path}");
                    }
                }
            }
        }
        assert!(checked > 500, "{checked}");
        for not_plain in [
            "/a//b", "/a/./b", "/a/..", "/a%2e", "/a;b", "/a\\b", "//", "/./", "/a?b",
        ] {
            assert!(!is_plain(not_plain), "{not_plain}");
        }
        assert!(is_plain("/"));
        assert!(is_plain("/public/x"));
        assert!(is_plain("/public/"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(raw: &str) -> String {
        normalise(raw)
            .unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
            .canonical
    }

    fn alternates(raw: &str) -> Vec<String> {
        normalise(raw)
            .unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
            .alternates
    }

    /// (raw, canonical, alternates). If a canonical form were wrong, the gateway would
    /// authorise one path and forward another, or match the wrong route.
    const ACCEPTED: &[(&str, &str, &[&str])] = &[
        // Plain paths pass through untouched.
        ("/", "/", &[]),
        ("/admin", "/admin", &[]),
        ("/admin/", "/admin/", &[]),
        ("/a/b/c", "/a/b/c", &[]),
        ("/a/b/c/", "/a/b/c/", &[]),
        ("/PUBLIC/x", "/PUBLIC/x", &[]),
        ("/a-b_c.d~e", "/a-b_c.d~e", &[]),
        ("/a!$&'()*+,=:@", "/a!$&'()*+,=:@", &[]),
        // Dot segments, raw and encoded, never above the root.
        ("/public/../admin", "/admin", &[]),
        ("/public/%2e%2e/admin", "/admin", &[]),
        ("/public/%2E%2E/admin", "/admin", &[]),
        ("/public/.%2e/admin", "/admin", &[]),
        ("/public/%2e./admin", "/admin", &[]),
        ("/./admin", "/admin", &[]),
        ("/%2e/admin", "/admin", &[]),
        ("/PUBLIC/../admin", "/admin", &[]),
        ("/..", "/", &[]),
        ("/../../..", "/", &[]),
        ("/../admin", "/admin", &[]),
        ("/a/..", "/", &[]),
        ("/a/b/..", "/a/", &[]),
        ("/a/b/.", "/a/b/", &[]),
        ("/a/./b/../c", "/a/c", &[]),
        ("/a/b/../../../../c", "/c", &[]),
        ("/...", "/...", &[]),
        ("/a/.../b", "/a/.../b", &[]),
        ("/a/.b/..c/", "/a/.b/..c/", &[]),
        // Repeated slashes collapse before dots resolve.
        ("//admin", "/admin", &[]),
        ("///admin//x///", "/admin/x/", &[]),
        ("/public//../admin", "/admin", &[]),
        // Unreserved escapes decoded, others kept with upper-case hex.
        ("/a/%7Eb", "/a/~b", &[]),
        ("/a/%7eb", "/a/~b", &[]),
        ("/%41%7a%30%2D%5F", "/Az0-_", &[]),
        ("/a%20b", "/a%20b", &[]),
        ("/a%3fb", "/a%3Fb", &[]),
        ("/a%23b", "/a%23b", &[]),
        ("/a%25b", "/a%25b", &[]),
        ("/a%252e%252e/b", "/a%252e%252e/b", &[]),
        ("/caf%C3%A9", "/caf%C3%A9", &[]),
        ("/caf%c3%a9", "/caf%C3%A9", &[]),
        ("/%E2%82%AC", "/%E2%82%AC", &[]),
        ("/a%2Fb", "/a%2Fb", &["/a/b"]),
        // Encoded separators: canonical keeps them, alternates show the other reading.
        ("/public/%2e%2e%2fadmin", "/public/..%2Fadmin", &["/admin"]),
        ("/public/..%2fadmin", "/public/..%2Fadmin", &["/admin"]),
        ("/public/..%5cadmin", "/public/..%5Cadmin", &["/admin"]),
        ("/public/..\\admin", "/public/..\\admin", &["/admin"]),
        ("/%2Fadmin", "/%2Fadmin", &["/admin"]),
        ("/%5cadmin", "/%5Cadmin", &["/admin"]),
        ("/public/x/..%2F..%2Fadmin", "/public/x/..%2F..%2Fadmin", &["/admin"]),
        // Path parameters: stripped in the alternate reading.
        ("/admin;/public", "/admin;/public", &["/admin/public"]),
        ("/admin;jsessionid=1/x", "/admin;jsessionid=1/x", &["/admin/x"]),
        ("/a;x/b;y", "/a;x/b;y", &["/a/b"]),
        ("/a/...;x", "/a/...;x", &["/a/..."]),
        // An encoded `;` is a parameter delimiter too (some backends decode first), as
        // in the dot-segment check.
        ("/a%3Bx", "/a%3Bx", &["/a"]),
        ("/admin%3bx/y", "/admin%3Bx/y", &["/admin/y"]),
        ("/a%3B;x/b", "/a%3B;x/b", &["/a/b"]),
        // Both at once, in either order.
        ("/a;x%2Fy", "/a;x%2Fy", &["/a/y", "/a", "/a;x/y"]),
    ];

    #[test]
    fn accepted_paths_have_the_expected_canonical_form_and_alternates() {
        for (raw, want, want_alts) in ACCEPTED {
            let got = normalise(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"));
            assert_eq!(got.canonical, *want, "canonical of {raw:?}");
            assert_eq!(got.alternates, *want_alts, "alternates of {raw:?}");
        }
        assert!(ACCEPTED.len() >= 40);
    }

    /// If normalising were not idempotent, a prefix written in canonical form could fail
    /// the config check, and the gateway's own second look at a path could disagree.
    #[test]
    fn normalising_the_canonical_form_changes_nothing() {
        for (raw, _, _) in ACCEPTED {
            let once = canonical(raw);
            let twice = normalise(&once).unwrap_or_else(|e| panic!("{once:?} (from {raw:?}) refused: {e}"));
            assert_eq!(twice.canonical, once, "normalise not idempotent for {raw:?}");
            for alternate in alternates(raw) {
                assert_eq!(
                    canonical(&alternate),
                    alternate,
                    "alternate {alternate:?} of {raw:?} not canonical"
                );
            }
        }
    }

    /// Alternates never repeat the canonical form or each other; otherwise `policy` would
    /// see ambiguity where there is none.
    #[test]
    fn alternates_differ_from_canonical_and_each_other() {
        for (raw, _, _) in ACCEPTED {
            let got = normalise(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"));
            for (i, alternate) in got.alternates.iter().enumerate() {
                assert_ne!(*alternate, got.canonical, "{raw:?}");
                assert!(!got.alternates.iter().skip(i + 1).any(|a| a == alternate), "{raw:?}");
            }
        }
    }

    /// The canonical form never keeps a dot segment or an empty segment: if it did, the
    /// upstream could resolve it to a path the route table never saw.
    #[test]
    fn canonical_forms_have_no_dot_or_empty_segments() {
        for (raw, _, _) in ACCEPTED {
            let got = canonical(raw);
            let inner = got.strip_prefix('/').unwrap_or(&got);
            let inner = inner.strip_suffix('/').unwrap_or(inner);
            if inner.is_empty() {
                continue;
            }
            for segment in inner.split('/') {
                assert!(!matches!(segment, "" | "." | ".."), "{raw:?} → {got:?}");
            }
        }
    }

    /// Every path built from up to four tricky pieces: whenever one is accepted, its
    /// canonical form and each alternate normalise to themselves, and the canonical form
    /// yields no alternate the original did not. A failure means the gateway could
    /// authorise one string and a second look (or the upstream) see another.
    #[test]
    fn generated_paths_normalise_to_fixed_points() {
        const PIECES: &[&str] = &["/", ".", "..", "%2e", "%2F", "%5c", "\\", ";", "a", "%41", "%25", "//"];
        let mut paths = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| PIECES.iter().map(move |piece| format!("{p}{piece}")))
                .collect();
            paths.extend(longer);
        }
        paths.sort();
        paths.dedup();
        let mut accepted = 0;
        for tail in &paths {
            let raw = format!("/{tail}");
            let Ok(first) = normalise(&raw) else { continue };
            accepted += 1;
            let again =
                normalise(&first.canonical).unwrap_or_else(|e| panic!("{raw:?} → {:?} refused: {e}", first.canonical));
            assert_eq!(again.canonical, first.canonical, "{raw:?}");
            for alternate in &again.alternates {
                assert!(
                    first.alternates.contains(alternate),
                    "{raw:?}: {alternate:?} new on second pass"
                );
            }
            for alternate in &first.alternates {
                assert_eq!(canonical(alternate), *alternate, "{raw:?}");
            }
        }
        assert!(accepted > 1000, "only {accepted} generated paths accepted");
    }

    const REFUSED: &[(&str, PathError)] = &[
        ("", PathError::NotAbsolute),
        ("admin", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("http://evil/admin", PathError::NotAbsolute),
        ("%2Fadmin", PathError::NotAbsolute),
        // Control characters, raw and encoded.
        ("/public%00/../admin", PathError::ControlCharacter),
        ("/a\0b", PathError::ControlCharacter),
        ("/a\tb", PathError::ControlCharacter),
        ("/a\r\nb", PathError::ControlCharacter),
        ("/a\x7fb", PathError::ControlCharacter),
        ("/a%0d%0aSet-Cookie:x", PathError::ControlCharacter),
        ("/a%09", PathError::ControlCharacter),
        ("/a%1F", PathError::ControlCharacter),
        ("/a%7f", PathError::ControlCharacter),
        ("/a%C2%85", PathError::ControlCharacter),
        // Characters that must arrive encoded.
        ("/a b", PathError::InvalidCharacter),
        ("/café", PathError::InvalidCharacter),
        ("/a?x=/public", PathError::InvalidCharacter),
        ("/a#frag", PathError::InvalidCharacter),
        // Malformed escapes.
        ("/a%", PathError::MalformedEscape),
        ("/a%4", PathError::MalformedEscape),
        ("/a%G1", PathError::MalformedEscape),
        ("/a%1G", PathError::MalformedEscape),
        ("/a%%41", PathError::MalformedEscape),
        ("/a%-1", PathError::MalformedEscape),
        // Not UTF-8 once fully decoded: overlong dots, lone continuation, truncation.
        ("/public/%c0%ae%c0%ae/admin", PathError::InvalidUtf8),
        ("/%c0%af", PathError::InvalidUtf8),
        ("/%e0%80%ae", PathError::InvalidUtf8),
        ("/%80", PathError::InvalidUtf8),
        ("/%C3", PathError::InvalidUtf8),
        ("/%ff", PathError::InvalidUtf8),
        // Dot segments with parameters (Tomcat/Keycloak `..;/`).
        ("/public/..;/admin", PathError::DotSegmentWithParameter),
        ("/public/..;x=y/admin", PathError::DotSegmentWithParameter),
        ("/public/.;x/admin", PathError::DotSegmentWithParameter),
        ("/public/%2e%2e;/admin", PathError::DotSegmentWithParameter),
        ("/public/..%3b/admin", PathError::DotSegmentWithParameter),
        ("/public/..;", PathError::DotSegmentWithParameter),
        // Only visible in an alternate reading: still refused.
        ("/public/x%2F..;/admin", PathError::DotSegmentWithParameter),
    ];

    #[test]
    fn malformed_paths_are_refused_with_the_right_reason() {
        for (raw, want) in REFUSED {
            assert_eq!(normalise(raw), Err(*want), "{raw:?}");
        }
    }

    /// Messages go to clients: they must not echo attacker-controlled input.
    #[test]
    fn error_messages_do_not_echo_input() {
        for (raw, _) in REFUSED {
            let Err(e) = normalise(raw) else {
                panic!("{raw:?} accepted")
            };
            let message = e.to_string();
            assert!(!message.is_empty());
            if raw.len() > 3 {
                assert!(!message.contains(raw), "{message:?} echoes {raw:?}");
            }
        }
    }

    /// Every two-digit escape either decodes to an unreserved character, stays encoded
    /// in upper case, or is refused; none slips through as a raw reserved character.
    #[test]
    fn every_single_byte_escape_is_decoded_kept_or_refused() {
        for byte in 0u8..=255 {
            let raw = format!("/a%{byte:02x}b");
            match normalise(&raw) {
                Ok(n) if is_unreserved(byte) => assert_eq!(n.canonical, format!("/a{}b", char::from(byte))),
                Ok(n) => assert_eq!(n.canonical, format!("/a%{byte:02X}b"), "{raw}"),
                Err(PathError::ControlCharacter) => assert!(is_control(byte), "{raw}"),
                Err(PathError::InvalidUtf8) => assert!(byte >= 0x80, "{raw}"),
                Err(e) => panic!("{raw}: unexpected {e}"),
            }
        }
    }
}
