//! Cookie and session-token parsing: any `Cookie` header (several lines, any bytes) is
//! read without panicking; a session token is accepted as a store key only in its one
//! well-formed shape (43 base64url characters of 32 bytes), and its key is the SHA-256
//! of exactly those bytes.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::session::id_hash_of_cookie;
use portcullis::ui::web;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n').take(8) {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(http::header::COOKIE, v);
        }
    }
    let _ = web::cookie_lines_are_utf8(&headers);
    let _ = web::single_cookie(&headers, "__Host-portcullis-prod");
    let _ = web::cookie(&headers, "__Host-portcullis-prod");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(hash) = id_hash_of_cookie(text) {
            assert_eq!(text.len(), 43, "{text:?}");
            assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text:?}");
            let _ = hash;
        }
    }
});
