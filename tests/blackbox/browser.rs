//! Real-browser test: `portcullis demo` signed into with Debian's Chromium, driven by
//! `tests/browser/signin.mjs` (playwright-core). Password + TOTP sign-in in two browser
//! contexts, one ends the other's session on the account page, the other is sent back to
//! the login page. Screenshots of each step go to `target/browser-screenshots/`.
//!
//! Needs `npm ci` in tests/browser (done by `.ci/run`), node on PATH and
//! /usr/bin/chromium. The demo process and script helpers are shared with `pages.rs`.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{BIN, demo_json};

/// The screenshots signin.mjs must leave, in step order.
const SCREENSHOTS: [&str; 6] = [
    "01-login.png",
    "02-mfa.png",
    "03-app.png",
    "04-account-two-sessions.png",
    "05-account-one-session.png",
    "06-b-signed-out.png",
];

/// The script waits up to a TOTP step (30 s) between the two sign-ins; everything else
/// takes seconds.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

/// `portcullis demo` in a temp dir; SIGTERM (then SIGKILL) on drop, also when the test
/// fails.
pub struct Demo {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl Demo {
    /// Starts the demo on port 0; [`Demo::wait_ready`] reads where it listens.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the demo on port 0 with more arguments (e.g. `--upstream URL`).
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let stdout = fs::File::create(dir.path().join("demo.stdout")).expect("stdout file");
        let stderr = fs::File::create(dir.path().join("demo.stderr")).expect("stderr file");
        let child = Command::new(BIN)
            .arg("demo")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data")
            .arg(dir.path())
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start portcullis demo");
        Demo {
            child: Some(child),
            dir,
        }
    }

    pub fn logs(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- demo stdout ---\n{}\n--- demo stderr ---\n{}",
            read("demo.stdout"),
            read("demo.stderr")
        )
    }

    /// Waits for demo.json (with the bound addresses) and for `GET /healthz` on the admin
    /// address it names to answer 200; returns demo.json.
    pub fn wait_ready(&mut self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("portcullis demo exited early ({status})\n{}", self.logs());
            }
            if let Some(info) = demo_json(self.dir.path())
                && info["admin"].as_str().is_some_and(healthz_ok)
            {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "portcullis demo not healthy after 30 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// A plain HTTP/1.1 `GET /healthz` to `admin` (`IP:PORT`) answered with 200.
fn healthz_ok(admin: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(admin) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Kills the script on drop (timeout or panic).
struct Script(Option<Child>);

impl Drop for Script {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `node <script> <args>` from the repository root, its output into `log_path`;
/// kills it after `timeout`. Returns its exit status (None when it timed out) and the
/// log, which is also printed.
pub fn run_node_script(
    script: &Path,
    args: &[&std::ffi::OsStr],
    log_path: &Path,
    timeout: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let log = fs::File::create(log_path).expect("create the script's log");
    let child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node (is Node 20 on PATH?): {e}"));
    let mut running = Script(Some(child));
    let deadline = Instant::now() + timeout;
    let status = loop {
        let child = running.0.as_mut().expect("script child");
        if let Some(status) = child.try_wait().expect("wait for the script") {
            running.0 = None;
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None; // dropped below: killed
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(running);
    let output = fs::read_to_string(log_path).unwrap_or_default();
    let name = script.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    println!("--- {name} ---\n{output}");
    (status, output)
}

#[test]
fn browser_sign_in_two_sessions_end_one() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests").join("browser");
    assert!(
        browser_dir.join("node_modules").join("playwright-core").is_dir(),
        "{} is missing: run `npm ci` in tests/browser (bash .ci/run does)",
        browser_dir.join("node_modules").display()
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: `apt-get install -y chromium` (bash .ci/run does)"
    );

    let out = root.join("target").join("browser-screenshots");
    // Only this test's files: `pages.rs` writes to a folder below, maybe at the same time.
    for name in SCREENSHOTS {
        let _ = fs::remove_file(out.join(name));
    }
    fs::create_dir_all(&out).expect("create screenshot folder");

    let mut demo = Demo::start();
    let info = demo.wait_ready();
    // The acme user without roles (the first acme user is its admin).
    let user = info["users"]
        .as_array()
        .expect("demo.json users")
        .iter()
        .find(|u| u["tenant"] == "acme" && u["roles"].as_array().is_some_and(|r| r.is_empty()))
        .expect("a plain acme user in demo.json");
    let field = |name: &str| {
        user[name]
            .as_str()
            .unwrap_or_else(|| panic!("demo.json user has no {name}"))
            .to_string()
    };
    let public_addr = info["public"].as_str().expect("demo.json public").to_string();
    assert!(
        !public_addr.ends_with(":0"),
        "demo.json names the bound port, not the configured 0: {public_addr}"
    );

    let log_path = out.join("signin.log");
    let (username, password, secret) = (field("username"), field("password"), field("totp_secret"));
    let args: [&std::ffi::OsStr; 6] = [
        public_addr.as_ref(),
        "acme.localhost".as_ref(),
        username.as_ref(),
        password.as_ref(),
        secret.as_ref(),
        out.as_os_str(),
    ];
    let (status, output) = run_node_script(&browser_dir.join("signin.mjs"), &args, &log_path, SCRIPT_TIMEOUT);

    let status = status.unwrap_or_else(|| panic!("signin.mjs did not finish in {SCRIPT_TIMEOUT:?}\n{output}"));
    assert!(
        status.success(),
        "signin.mjs failed ({status}); screenshots in {}\n{output}",
        out.display()
    );
    for name in SCREENSHOTS {
        let path = out.join(name);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "screenshot {} is missing or empty", path.display());
    }
}
