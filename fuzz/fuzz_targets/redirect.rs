//! Redirect target validation (`rd`): whatever comes in, what goes out is `/` or a
//! same-host path a browser cannot read as another host, scheme or header line, even
//! after one or two rounds of percent-decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::ui::web::safe_redirect;

fn same_host_path(s: &str) -> bool {
    s.starts_with('/') && !s.starts_with("//") && !s.contains('\\') && s.bytes().all(|b| b.is_ascii_graphic())
}

fuzz_target!(|rd: &str| {
    let out = safe_redirect(Some(rd));
    assert!(out == "/" || out == rd, "rewritten instead of refused: {rd:?} → {out:?}");
    assert!(same_host_path(&out), "{rd:?} → {out:?}");
    let once = portcullis_fuzz_decode(&out);
    let twice = portcullis_fuzz_decode(&once);
    for reading in [&once, &twice] {
        assert!(same_host_path(reading) && !reading.contains("/\\"), "{rd:?} reads as {reading:?}");
    }
});

fn portcullis_fuzz_decode(s: &str) -> String {
    // The same decoder browsers and servers use for one round of %XX.
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
