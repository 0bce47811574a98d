//! What `portcullis demo` shows a newcomer: the banner on stdout (the URLs to open
//! first, then the users) stays readable because the access log (a line per request)
//! goes to `<data>/access.log`; the rare other log lines (security events) stay JSON on
//! stdout, as in `run`.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;

/// `portcullis demo` on port 0 in a temp dir; SIGTERM on drop.
struct Demo {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn start() -> Demo {
        let dir = tempfile::tempdir().expect("tempdir");
        let stdout = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let child = std::process::Command::new(BIN)
            .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data")
            .arg(dir.path().join("data"))
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn demo");
        Demo { child, dir }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
}

/// If this broke, the demo's credentials would scroll away under access-log lines, or
/// the banner would not say where to start and where the log went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_banner_stays_on_screen_and_the_access_log_goes_to_the_data_dir() {
    let demo = Demo::start();
    let data = demo.data();
    let info = eventually(Duration::from_secs(30), || {
        let data = data.clone();
        async move {
            let v = demo_json(&data)?;
            let addr: std::net::SocketAddr = v["public"].as_str()?.parse().ok()?;
            tokio::net::TcpStream::connect(addr).await.ok()?;
            Some(v)
        }
    })
    .await
    .unwrap_or_else(|| panic!("demo did not start\n{}\n{}", demo.read("stdout"), demo.read("stderr")));
    let public: std::net::SocketAddr = info["public"].as_str().unwrap().parse().unwrap();
    let admin = info["admin"].as_str().unwrap().to_string();

    // A request of a tenant page, and an operator call outside the operator's tier
    // (a `cross_tier` security event at warn).
    assert_eq!(
        raw_get(public, "acme.localhost", "/public/demo-log-check").await.status,
        200
    );
    let olivia = info["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["tier"] == "prod")
        .unwrap()["tokens"][0]
        .as_str()
        .unwrap()
        .to_string();
    let refused = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .put(format!("http://{admin}/v1/tenants/initech/breaker"))
        .bearer_auth(&olivia)
        .json(&serde_json::json!({ "reason": "demo log check" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);

    let log_path = data.join("access.log");
    let access = eventually(Duration::from_secs(5), || async {
        read_lines(&log_path)
            .into_iter()
            .find(|l| l["target"] == "access" && l["path"] == "/public/demo-log-check")
    })
    .await;
    assert!(access.is_some(), "no access line in {}", log_path.display());
    // The admin listener's lines go there too, not onto the banner.
    let admin_access = eventually(Duration::from_secs(5), || async {
        read_lines(&log_path)
            .into_iter()
            .find(|l| l["listener"] == "admin" && l["path"] == "/v1/tenants/initech/breaker")
    })
    .await;
    assert!(admin_access.is_some(), "no admin access line in {}", log_path.display());
    let warned = eventually(Duration::from_secs(5), || async {
        json_lines(&demo.read("stdout"))
            .into_iter()
            .find(|l| l["event.action"] == "cross_tier")
    })
    .await;
    assert!(
        warned.is_some(),
        "a cross_tier event on stdout:\n{}",
        demo.read("stdout")
    );

    let stdout = demo.read("stdout");
    assert!(
        !stdout.contains("demo-log-check"),
        "no access line on stdout:\n{stdout}"
    );
    let first_json = stdout
        .lines()
        .position(|l| l.trim_start().starts_with('{'))
        .unwrap_or(usize::MAX);
    let banner_end = stdout
        .lines()
        .position(|l| l.contains("alice-demo-password"))
        .expect("users listed");
    assert!(
        banner_end < first_json,
        "the banner comes before any log line:\n{stdout}"
    );
    let port = public.port();
    let login = stdout
        .find(&format!("http://acme.localhost:{port}/.portcullis/login"))
        .unwrap_or_else(|| panic!("login URL with the bound port:\n{stdout}"));
    let account = stdout
        .find(&format!("http://acme.localhost:{port}/.portcullis/account"))
        .unwrap_or_else(|| panic!("account URL:\n{stdout}"));
    let first_user = stdout.find("alice-demo-password").expect("users listed");
    assert!(login < first_user && account < first_user, "URLs first:\n{stdout}");
    assert!(
        stdout.contains(&log_path.canonicalize().unwrap().display().to_string()),
        "{stdout}"
    );
    assert!(stdout.contains("four eyes counts people, not tokens"), "{stdout}");
    assert!(
        stdout.contains(&format!("Console     http://{admin}/console/")),
        "the console URL with the bound admin address:\n{stdout}"
    );
    assert!(!stdout.contains("/v1/tenants/initech/breaker"), "{stdout}");

    // The command line the banner and the README show finds the demo's store from the
    // policy set the demo wrote, with no --data.
    let policies = data.canonicalize().unwrap().join("policies");
    assert!(
        stdout.contains(&format!(
            "portcullis sessions list --tenant acme --config {}",
            policies.display()
        )),
        "{stdout}"
    );
    let listed = std::process::Command::new(BIN)
        .args(["user", "list", "--tenant", "acme", "--config"])
        .arg(&policies)
        .current_dir("/")
        .output()
        .expect("portcullis user list");
    let users = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(users.lines().any(|l| l.starts_with("alice\t")), "{users}");
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    json_lines(&std::fs::read_to_string(path).unwrap_or_default())
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}
