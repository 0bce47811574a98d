//! The README as a newcomer meets it: rendered by a CommonMark renderer with GitHub's
//! tables (no table broken into a paragraph of pipes, every row as wide as its header,
//! the Mermaid diagrams as `mermaid` code blocks, every relative link pointing at a file
//! of the repo), and its "Put Portcullis in front of your own app" walk-through run as
//! written: its shell steps, then its policy files through `portcullis check` and
//! `portcullis run` on a real Redis.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

use crate::harness::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// Line number (1-based) of a byte offset.
fn line_at(md: &str, offset: usize) -> usize {
    md[..offset.min(md.len())].matches('\n').count() + 1
}

/// Cells of one source row of a GitHub table: the unescaped pipes, less one (every row
/// of ours starts and ends with a pipe).
fn cells(row: &str) -> usize {
    let bytes = row.as_bytes();
    let pipes = (0..bytes.len())
        .filter(|&i| bytes[i] == b'|' && (i == 0 || bytes[i - 1] != b'\\'))
        .count();
    pipes.saturating_sub(1)
}

/// GitHub's anchor of a heading: lower case, spaces as `-`, other punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// What a render of `md` shows wrong, one message per problem, and how many relative
/// links were checked against `repo`.
fn render_problems(md: &str, repo: &Path) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut tables: Vec<Range<usize>> = Vec::new();
    let mut code: Vec<Range<usize>> = Vec::new();
    let mut mermaid_blocks = 0;
    let mut links = 0;
    let mut columns = 0;
    let mut anchors: Vec<(usize, String)> = Vec::new();
    let mut headings: Vec<String> = Vec::new();
    let mut heading: Option<String> = None;
    let repo = repo.canonicalize().expect("repo dir");
    for (event, range) in Parser::new_ext(md, Options::ENABLE_TABLES).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(text) | Event::Code(text) if heading.is_some() => {
                heading.get_or_insert_default().push_str(&text);
            }
            Event::End(TagEnd::Heading(_)) => headings.extend(heading.take().map(|h| slug(&h))),
            Event::Start(Tag::Table(alignments)) => {
                columns = alignments.len();
                tables.push(range);
            }
            Event::Start(Tag::TableHead) | Event::Start(Tag::TableRow) => {
                let row = md[range.clone()].lines().next().unwrap_or("").trim();
                let line = line_at(md, range.start);
                if !(row.starts_with('|') && row.ends_with('|')) {
                    problems.push(format!("line {line}: a table row should start and end with `|`"));
                } else if cells(row) != columns {
                    problems.push(format!(
                        "line {line}: {} cells in a table of {columns} columns",
                        cells(row)
                    ));
                }
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                if matches!(&kind, CodeBlockKind::Fenced(lang) if lang.as_ref() == "mermaid") {
                    mermaid_blocks += 1;
                }
                code.push(range);
            }
            Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. }) => {
                let line = line_at(md, range.start);
                let dest = dest_url.as_ref();
                if let Some(anchor) = dest.strip_prefix('#') {
                    anchors.push((line, anchor.to_string()));
                    continue;
                }
                if dest.contains("://") || dest.starts_with("mailto:") {
                    continue;
                }
                links += 1;
                let path = dest.split(['#', '?']).next().unwrap_or("");
                if dest.starts_with('/') {
                    problems.push(format!(
                        "line {line}: `{dest}` is an absolute path, not a file of the repo"
                    ));
                    continue;
                }
                match repo.join(path).canonicalize() {
                    Ok(found) if found.starts_with(&repo) => {}
                    Ok(_) => problems.push(format!("line {line}: `{dest}` points outside the repo")),
                    Err(_) => problems.push(format!("line {line}: `{dest}` does not exist in the repo")),
                }
            }
            _ => {}
        }
    }
    let inside = |ranges: &[Range<usize>], at: usize| ranges.iter().any(|r| r.contains(&at));
    let mut offset = 0;
    let mut mermaid_fences = 0;
    for line in md.split_inclusive('\n') {
        if !inside(&code, offset) || code.iter().any(|r| r.start == offset) {
            if line.starts_with("```mermaid") {
                mermaid_fences += 1;
            }
            if line.starts_with('|') && !inside(&tables, offset) {
                problems.push(format!(
                    "line {}: a `|` row outside any table (renders as a paragraph of pipes)",
                    line_at(md, offset)
                ));
            }
        }
        offset += line.len();
    }
    for (line, anchor) in anchors {
        if !headings.contains(&anchor) {
            problems.push(format!("line {line}: no heading for `#{anchor}`"));
        }
    }
    if mermaid_fences != mermaid_blocks {
        problems.push(format!(
            "{mermaid_fences} ```mermaid fences but {mermaid_blocks} mermaid code blocks"
        ));
    }
    if mermaid_blocks == 0 {
        problems.push("no Mermaid diagram".to_string());
    }
    (problems, links)
}

/// If this broke, the README on GitHub would show tables as paragraphs of pipes, rows
/// with cells silently dropped or added, a diagram as plain text, or links that lead
/// nowhere (or outside the repo).
#[test]
fn the_readme_renders_as_intended() {
    let md = readme();
    let (problems, links) = render_problems(&md, &repo());
    assert!(problems.is_empty(), "README.md:\n{}", problems.join("\n"));
    assert!(
        links >= 5,
        "the README links the files it names ({links} relative links)"
    );

    // bench/run.sh writes the latest results between these markers.
    let start = md.matches("<!-- bench:latest:start -->").count();
    let end = md.matches("<!-- bench:latest:end -->").count();
    assert_eq!((start, end), (1, 1), "one pair of benchmark markers");
    let (before, after) = md.split_once("<!-- bench:latest:start -->").unwrap();
    let (_, after) = after.split_once("<!-- bench:latest:end -->").expect("end after start");
    for text in [before, after] {
        assert!(!text.contains("../shared"), "the README points inside the repo only");
    }
}

/// If this broke, the check above could pass a README with the defects it exists for.
#[test]
fn the_render_check_finds_broken_tables_diagrams_and_links() {
    let md = [
        "| a | b |",     // 1
        "| --- | --- |", // 2
        "| 1 | 2 |",     // 3
        "",              // 4: the blank line that ended the README's Commands table
        "| 3 | 4 |",     // 5
        "",
        "| a | b |",
        "| --- | --- |",
        "| 1 | 2 | 3 |", // 9: GitHub drops the third cell
        "",
        "```mermaid",
        "flowchart LR",
        "```",
        "",
        "<details>", // an HTML block: the fence below is no code block
        "```mermaid",
        "flowchart LR",
        "```",
        "</details>",
        "",
        "[gone](no/such/file.md) [root](/etc/passwd) [up](..) [ok](Cargo.toml)",
        "",
        "## The `run` command",
        "[here](#the-run-command) [there](#no-such-heading)",
    ]
    .join("\n");
    let (problems, links) = render_problems(&md, &repo());
    let all = problems.join("\n");
    assert!(all.contains("line 5: a `|` row outside any table"), "{all}");
    assert!(all.contains("line 9: 3 cells in a table of 2 columns"), "{all}");
    assert!(all.contains("2 ```mermaid fences but 1 mermaid code blocks"), "{all}");
    assert!(all.contains("`no/such/file.md` does not exist"), "{all}");
    assert!(all.contains("`/etc/passwd` is an absolute path"), "{all}");
    assert!(all.contains("`..` points outside the repo"), "{all}");
    assert!(all.contains("line 24: no heading for `#no-such-heading`"), "{all}");
    assert_eq!(links, 4, "{all}");
    assert_eq!(problems.len(), 7, "{all}");
    let (problems, _) = render_problems("text\n", &repo());
    assert_eq!(problems, ["no Mermaid diagram"]);
}

/// One step of the walk-through: a shell block to run, or a file to write.
enum Step {
    Run(String),
    File(String, String),
}

/// The walk-through's steps in order: each code block right after a
/// `<!-- walkthrough: run -->` or `<!-- walkthrough: file PATH -->` comment.
fn walkthrough(md: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut pending: Option<String> = None;
    let mut in_block: Option<(String, String)> = None;
    for event in Parser::new_ext(md, Options::ENABLE_TABLES) {
        match event {
            Event::Html(html) => {
                if let Some(marker) = html.trim().strip_prefix("<!-- walkthrough:") {
                    pending = Some(marker.trim_end_matches("-->").trim().to_string());
                }
            }
            Event::Start(Tag::CodeBlock(_)) => {
                if let Some(marker) = pending.take() {
                    in_block = Some((marker, String::new()));
                }
            }
            Event::Text(text) => {
                if let Some((_, body)) = &mut in_block {
                    body.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((marker, body)) = in_block.take() {
                    steps.push(match marker.strip_prefix("file ") {
                        Some(path) => Step::File(path.trim().to_string(), body),
                        None => {
                            assert_eq!(marker, "run", "unknown walk-through marker");
                            Step::Run(body)
                        }
                    });
                }
            }
            Event::Start(_) | Event::End(_) if in_block.is_none() => {
                if let Some(marker) = &pending
                    && !matches!(event, Event::Start(Tag::HtmlBlock) | Event::End(TagEnd::HtmlBlock))
                {
                    panic!("`<!-- walkthrough: {marker} -->` is not right before a code block");
                }
            }
            _ => {}
        }
    }
    steps
}

/// A `portcullis run` started on the walk-through's policy; SIGTERM on drop.
struct Running {
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Running {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The public and admin addresses from the `listening` log line.
    async fn addresses(&mut self) -> (SocketAddr, SocketAddr) {
        let found = eventually(Duration::from_secs(30), || async {
            self.logs()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["message"] == "listening")
                .and_then(|l| Some((l["public"].as_str()?.parse().ok()?, l["admin"].as_str()?.parse().ok()?)))
        })
        .await;
        found.unwrap_or_else(|| panic!("portcullis run did not start:\n{}", self.logs()))
    }
}

/// If this broke, a newcomer following the README's walk-through would write policy
/// files that `portcullis check` refuses, hash an operator token in a way the gateway
/// never matches, or give the gateway a Redis user it cannot work with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_runs_as_written() {
    let steps = walkthrough(&readme());
    let files: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::File(path, _) => Some(path.as_str()),
            Step::Run(_) => None,
        })
        .collect();
    assert_eq!(
        files,
        [
            "policies/gateway.toml",
            "policies/tiers/prod.toml",
            "policies/tenants/example.toml"
        ]
    );
    let redis = RedisServer::start();
    let root = tempfile::tempdir().expect("tempdir");
    let out = root.path().join("walkthrough.out");

    // The shell steps, in order, in one shell (they `cd` and export), against the test
    // Redis; then what they made that the test needs.
    let mut script = String::from("set -euo pipefail\n");
    for step in &steps {
        if let Step::Run(body) = step {
            script.push_str(&body.replace("redis-cli ", &format!("redis-cli -p {} ", redis.port)));
        }
    }
    script.push_str("printf '%s\\n' \"$PORTCULLIS_REDIS_PROD_PASSWORD\" > \"$WALKTHROUGH_OUT\"\n");
    // `portcullis` as the reader has it on their PATH: the binary under test.
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let run = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(root.path())
        .env("WALKTHROUGH_OUT", &out)
        .env("PATH", path)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "the walk-through's shell steps failed:\n{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let saved = std::fs::read_to_string(&out).expect("walk-through output");
    let redis_password = saved.lines().next().expect("redis password").to_string();
    // `operator token` printed the token, then its entry: the SHA-256 of its bytes, as hex.
    let mut lines = stdout
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("token for olivia"));
    let token = lines
        .find(|l| !l.is_empty() && !l.starts_with("token for"))
        .expect("the token line")
        .to_string();
    let printed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token_sha256 = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("the hash line");
    assert_eq!(printed, sha256_hex(token.as_bytes()), "{stdout}");
    // `keys init` printed the [keys] table the tier file below names.
    assert!(
        stdout.contains(
            "[keys]\ncookie = \"file:secrets/prod-cookie.key\"\nassertion = \"file:secrets/prod-assertion.pem\""
        ),
        "{stdout}"
    );

    for step in &steps {
        if let Step::File(path, body) = step {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
    }
    let policies = root.path().join("policies");
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&policies)
        .env("PORTCULLIS_REDIS_PROD_PASSWORD", &redis_password)
        .output()
        .expect("portcullis check");
    assert!(
        check.status.success(),
        "portcullis check refused the walk-through's files:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).starts_with("ok: 1 tiers, 1 tenants"));

    // Step 3's hash goes where the tier file's comment says.
    let tier_file = policies.join("tiers/prod.toml");
    let tier = std::fs::read_to_string(&tier_file).unwrap();
    let placeholder = tier
        .lines()
        .find_map(|l| l.strip_prefix("token_sha256 = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("token_sha256 line")
        .to_string();
    std::fs::write(&tier_file, tier.replace(&placeholder, printed)).unwrap();

    // `run` as written, on test ports, the test Redis and a recording upstream (step 6
    // starts it on the policy's own addresses).
    let upstream = RecordingUpstream::start().await;
    let store = format!("redis://127.0.0.1:{}", redis.port);
    let log = root.path().join("run.log");
    let mut gateway = Running {
        child: Command::new(BIN)
            .args(["run", "--config"])
            .arg(&policies)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--store",
                &store,
            ])
            .args(["--upstream", &upstream.url()])
            .env("PORTCULLIS_REDIS_PROD_PASSWORD", &redis_password)
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(root.path().join("run.stderr")).unwrap())
            .spawn()
            .expect("portcullis run"),
        log,
    };
    let (public, admin) = gateway.addresses().await;

    // The tenant answers over TLS with the step 2 certificate, by SNI.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(policies.join("tls/app.example.com.crt")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .resolve("app.example.com", public)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://app.example.com:{}", public.port());
    let r = client.get(format!("{base}/assets/app.css")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", gateway.logs());
    assert_eq!(upstream.only().target, "/assets/app.css");
    let r = client.get(format!("{base}/reports")).send().await.unwrap();
    assert_eq!(r.status(), 401, "a path no rule covers needs a session");

    // The operator's token works on the admin API; another does not.
    let admin_client = reqwest::Client::builder().no_proxy().build().unwrap();
    let breakers = |token: String| {
        let request = admin_client
            .get(format!("http://{admin}/v1/breakers"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(breakers(token.clone()).await, 200, "{}", gateway.logs());
    assert_eq!(breakers(format!("{token}x")).await, 401);
    // Ready: as the tier's ACL user it follows the tier's change events too.
    let ready = admin_client.get(format!("http://{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());

    // The first user, as step 6 adds her, signs in through the gateway: both work on
    // Redis as the tier's ACL user.
    let mut add = Command::new(BIN)
        .args(["user", "add", "--config"])
        .arg(&policies)
        .args([
            "--tenant",
            "example",
            "--username",
            "alice",
            "--role",
            "tenant-admin",
            "--role",
            "admin",
        ])
        .args(["--store", &store])
        .env("PORTCULLIS_REDIS_PROD_PASSWORD", &redis_password)
        .env_remove("PORTCULLIS_NEW_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("portcullis user add");
    {
        use std::io::Write;
        let mut stdin = add.stdin.take().unwrap();
        stdin.write_all(b"a long passphrase for the walk-through\n").unwrap();
    }
    let add = add.wait_with_output().unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let r = client
        .post(format!("{base}/.portcullis/api/login"))
        .json(&serde_json::json!({"username": "alice", "password": "a long passphrase for the walk-through"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", gateway.logs());
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["next"], "enrol");

    // Everything went under the tier's prefix, and its user reaches nothing else.
    let (keys, _) = redis.cli_status(&["--raw", "KEYS", "*"]);
    assert!(!keys.is_empty(), "the gateway wrote to Redis");
    assert!(keys.lines().all(|k| k.starts_with("portcullis:prod:")), "{keys}");
    let as_tier = |args: &[&str]| {
        let mut all = vec![
            "--user",
            "portcullis-prod",
            "--pass",
            &redis_password,
            "--no-auth-warning",
        ];
        all.extend_from_slice(args);
        redis.cli_status(&all).0
    };
    assert!(as_tier(&["GET", "portcullis:staging:x"]).contains("NOPERM"));
    assert!(as_tier(&["FLUSHALL"]).contains("NOPERM"));
}
