//! Applying an approved change to the policy files: find the file (`tenants/*.toml` by
//! its `id`, `tiers/*.toml` by its `name`), edit it with `toml_edit` (comments, order and
//! layout kept), validate the whole resulting policy set on a scratch copy of the policy
//! directory, and only then replace the real file atomically (temporary file + rename).
//!
//! Owns file reading and writing for change requests and nothing else: validation is
//! `config::load` (through [`crate::live::Live::validate_dir`]), the reload is the
//! caller's. Blocking: call it on the blocking pool. Must never write a file the
//! validation did not see, nor leave a half-written policy file.
//!
//! The scratch copy lives in the system temporary directory: `gateway.toml`, `tiers/` and
//! `tenants/` are copied, every other entry of the policy directory is a symlink to the
//! original, so `file:` references relative to the policy directory resolve as they do in
//! production. (References that climb out of the policy directory with `../` do not
//! resolve there; such a change fails its validation and changes nothing.)

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use toml_edit::{DocumentMut, Item, TableLike};

use super::{ChangeError, ChangeKind, ChangeRequest};
use crate::live::Live;

/// One planned file edit.
#[derive(Debug, Clone)]
pub struct Edit {
    /// The file to change, relative to the policy directory (`tenants/acme.toml`).
    pub rel_path: PathBuf,
    /// Its content when planned; the write is refused if it changed meanwhile.
    pub before_text: String,
    /// Its content after the edit.
    pub after_text: String,
    /// The changed keys' values before (from the file, for the audit log).
    pub before: Value,
    /// The changed keys' values after.
    pub after: Value,
}

/// Plans the edit a `tenant.update` or `tier.credentials` makes in `dir`.
pub fn plan(dir: &Path, cr: &ChangeRequest) -> Result<Edit, ChangeError> {
    let (sub, key, what) = match cr.kind {
        ChangeKind::TenantUpdate => ("tenants", "id", "tenant"),
        ChangeKind::TierCredentials => ("tiers", "name", "tier"),
        ChangeKind::TierBreakerReset | ChangeKind::TenantBreakerReset => {
            return Err(ChangeError::Invalid("a breaker reset edits no policy file".into()));
        }
    };
    let (path, text, mut doc) = find_file(&dir.join(sub), key, &cr.target)?.ok_or(ChangeError::NotFound(what))?;
    let (before, after) = match cr.kind {
        ChangeKind::TenantUpdate => set_fields(doc.as_table_mut(), &cr.change),
        _ => {
            if doc.get("keys").and_then(Item::as_table_like).is_none() {
                doc.insert("keys", Item::Table(toml_edit::Table::new()));
            }
            let keys = doc
                .get_mut("keys")
                .and_then(Item::as_table_like_mut)
                .ok_or_else(|| ChangeError::Apply("the tier file's `keys` is not a table".into()))?;
            set_fields(keys, &cr.change)
        }
    };
    let rel_path = path.strip_prefix(dir).map(Path::to_path_buf).unwrap_or(path);
    Ok(Edit {
        rel_path,
        before_text: text,
        after_text: doc.to_string(),
        before,
        after,
    })
}

/// The current values (from the policy files) of the keys `cr` would change; `null` when
/// the file cannot be found or read.
pub fn current_values(dir: &Path, cr: &ChangeRequest) -> Value {
    match plan(dir, cr) {
        Ok(edit) => edit.before,
        Err(_) => Value::Null,
    }
}

/// Loads the policy set as it would be after `edit`, on a scratch copy of `dir`; the
/// errors (as `file:line: problem`, naming the real files) when it does not validate.
pub fn validate(live: &Live, dir: &Path, edit: &Edit) -> Result<(), Vec<String>> {
    let scratch = Scratch::copy_of(dir).map_err(|e| vec![format!("cannot prepare the validation copy: {e}")])?;
    let target = scratch.path.join(&edit.rel_path);
    fs::write(&target, &edit.after_text)
        .map_err(|e| vec![format!("cannot write the validation copy: {}", e.kind())])?;
    live.validate_dir(&scratch.path).map(|_| ()).map_err(|errors| {
        errors
            .into_iter()
            .map(|mut e| {
                if let Ok(rel) = e.file.strip_prefix(&scratch.path) {
                    e.file = dir.join(rel);
                }
                e.to_string()
            })
            .collect()
    })
}

/// Replaces the file with `text` atomically, refusing when its content is no longer
/// `expected` (someone edited it since the plan).
pub fn write(dir: &Path, rel_path: &Path, expected: &str, text: &str) -> Result<(), ChangeError> {
    let path = dir.join(rel_path);
    let current = fs::read_to_string(&path)
        .map_err(|e| ChangeError::Apply(format!("cannot read {}: {}", rel_path.display(), e.kind())))?;
    if current != expected {
        return Err(ChangeError::Conflict(format!(
            "{} changed since the change was checked; approve again",
            rel_path.display()
        )));
    }
    write_atomic(&path, text).map_err(|e| ChangeError::Apply(format!("cannot write {}: {e}", rel_path.display())))
}

/// Temporary file in the same directory (hidden, so a reload meanwhile ignores it),
/// flushed to disk, given the old file's permissions, then renamed over the old file.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.{}.tmp", hex::encode(rand::random::<[u8; 6]>())));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = fs::metadata(path) {
            fs::set_permissions(&tmp, meta.permissions())?;
        }
        fs::rename(&tmp, path)?;
        // The rename itself must survive a power cut too.
        fs::File::open(parent)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The policy file in `dir` whose top-level `key` is `value`: path, text and document.
/// Files that do not parse are skipped (the validation reports them).
fn find_file(dir: &Path, key: &str, value: &str) -> Result<Option<(PathBuf, String, DocumentMut)>, ChangeError> {
    let entries =
        fs::read_dir(dir).map_err(|e| ChangeError::Apply(format!("cannot read {}: {}", dir.display(), e.kind())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            !name.starts_with('.') && name.ends_with(".toml") && p.is_file()
        })
        .collect();
    paths.sort();
    for path in paths {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let Ok(doc) = text.parse::<DocumentMut>() else {
            continue;
        };
        if doc.get(key).and_then(Item::as_str) == Some(value) {
            return Ok(Some((path, text, doc)));
        }
    }
    Ok(None)
}

/// Sets every field of `change` in `table`, keeping each replaced key's comments and
/// place; returns the old and new values as JSON.
fn set_fields(table: &mut dyn TableLike, change: &Map<String, Value>) -> (Value, Value) {
    let mut before = Map::new();
    let mut after = Map::new();
    for (k, v) in change {
        let old = table.get(k).and_then(Item::as_value);
        before.insert(k.clone(), old.map_or(Value::Null, toml_to_json));
        let mut new = json_to_toml(v);
        if let Some(old) = old {
            *new.decor_mut() = old.decor().clone();
        }
        // Replaced in place: `insert` would reset the key's decor (the comment above it).
        match table.get_mut(k) {
            Some(item) => *item = Item::Value(new),
            None => {
                table.insert(k, Item::Value(new));
            }
        }
        after.insert(k.clone(), v.clone());
    }
    (Value::Object(before), Value::Object(after))
}

/// Strings and arrays of strings: all a change carries.
fn json_to_toml(v: &Value) -> toml_edit::Value {
    match v {
        Value::Array(items) => {
            let mut a = toml_edit::Array::new();
            for item in items {
                a.push(json_to_toml(item));
            }
            toml_edit::Value::Array(a)
        }
        Value::String(s) => toml_edit::Value::from(s.as_str()),
        Value::Bool(b) => toml_edit::Value::from(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml_edit::Value::from(i),
            None => toml_edit::Value::from(n.to_string()),
        },
        other => toml_edit::Value::from(other.to_string()),
    }
}

fn toml_to_json(v: &toml_edit::Value) -> Value {
    match v {
        toml_edit::Value::String(s) => Value::String(s.value().clone()),
        toml_edit::Value::Integer(i) => Value::from(*i.value()),
        toml_edit::Value::Boolean(b) => Value::Bool(*b.value()),
        toml_edit::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        other => Value::String(other.to_string().trim().to_string()),
    }
}

/// A scratch copy of a policy directory, removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn copy_of(dir: &Path) -> std::io::Result<Scratch> {
        let dir = fs::canonicalize(dir)?;
        let path = std::env::temp_dir().join(format!("portcullis-change-{}", hex::encode(rand::random::<[u8; 8]>())));
        fs::create_dir(&path)?;
        let scratch = Scratch { path };
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let from = entry.path();
            let to = scratch.path.join(&name);
            let copied = name == "gateway.toml" || name == "tiers" || name == "tenants";
            if copied && from.is_dir() {
                fs::create_dir(&to)?;
                for inner in fs::read_dir(&from)? {
                    let inner = inner?;
                    let inner_to = to.join(inner.file_name());
                    if inner.path().is_file() {
                        fs::copy(inner.path(), &inner_to)?;
                    } else {
                        std::os::unix::fs::symlink(inner.path(), &inner_to)?;
                    }
                }
            } else if copied && from.is_file() {
                fs::copy(&from, &to)?;
            } else {
                std::os::unix::fs::symlink(&from, &to)?;
            }
        }
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // remove_dir_all removes symlinks themselves, never what they point at.
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::{ChangeStatus, digest};
    use serde_json::json;

    fn request(kind: ChangeKind, target: &str, change: Value) -> ChangeRequest {
        let Value::Object(change) = change else {
            panic!("object")
        };
        ChangeRequest {
            id: crate::changes::new_change_id(),
            version: 1,
            tier: "prod".into(),
            kind,
            target: target.into(),
            digest: digest(kind, target, &change, "r"),
            change,
            reason: "r".into(),
            status: ChangeStatus::Approved,
            proposed_by: "a".into(),
            edited_by: vec![],
            created_at: 0,
            updated_at: 0,
            expires_at: 10,
            decided_by: None,
            decided_at: None,
            errors: vec![],
        }
    }

    const TENANT: &str = "# Acme, our first customer.\nid = \"acme\"\ntier = \"prod\"\nhosts = [\"acme.test\"] # the app\nupstream = \"http://127.0.0.1:1\"\n\n[session]\nidle_timeout = \"30m\"\n";

    #[test]
    fn a_tenant_edit_keeps_comments_and_finds_the_file_by_id() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("tenants")).unwrap();
        fs::write(tmp.path().join("tenants/zzz-named-otherwise.toml"), TENANT).unwrap();
        fs::write(
            tmp.path().join("tenants/other.toml"),
            TENANT.replace("\"acme\"", "\"other\""),
        )
        .unwrap();
        let cr = request(
            ChangeKind::TenantUpdate,
            "acme",
            json!({"hosts": ["acme.test", "www.acme.test"], "upstream": "http://127.0.0.1:2"}),
        );
        let edit = plan(tmp.path(), &cr).unwrap();
        assert_eq!(edit.rel_path, Path::new("tenants/zzz-named-otherwise.toml"));
        assert!(
            edit.after_text.starts_with("# Acme, our first customer.\n"),
            "{}",
            edit.after_text
        );
        assert!(
            edit.after_text
                .contains("hosts = [\"acme.test\", \"www.acme.test\"] # the app"),
            "{}",
            edit.after_text
        );
        assert!(edit.after_text.contains("upstream = \"http://127.0.0.1:2\""));
        assert!(edit.after_text.contains("[session]\nidle_timeout = \"30m\""));
        assert_eq!(
            edit.before,
            json!({"hosts": ["acme.test"], "upstream": "http://127.0.0.1:1"})
        );
        let parsed: toml::Value = toml::from_str(&edit.after_text).unwrap();
        assert_eq!(parsed["tier"].as_str(), Some("prod"));

        write(tmp.path(), &edit.rel_path, &edit.before_text, &edit.after_text).unwrap();
        assert_eq!(
            fs::read_to_string(tmp.path().join("tenants/zzz-named-otherwise.toml")).unwrap(),
            edit.after_text
        );
        assert_eq!(
            fs::read_dir(tmp.path().join("tenants")).unwrap().count(),
            2,
            "a temp file was left"
        );
        let err = write(tmp.path(), &edit.rel_path, &edit.before_text, "x = 1").unwrap_err();
        assert!(
            matches!(err, ChangeError::Conflict(_)),
            "a changed file was overwritten: {err}"
        );

        let missing = request(ChangeKind::TenantUpdate, "nobody", json!({"tier": "prod"}));
        assert!(matches!(
            plan(tmp.path(), &missing),
            Err(ChangeError::NotFound("tenant"))
        ));
    }

    #[test]
    fn a_credentials_edit_sets_keys_of_the_named_tier() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("tiers")).unwrap();
        let tier = "name = \"prod\"\nproduction = true\n\n[keys]\n# rotated yearly\ncookie = \"file:secrets/prod.key\"\n\n[[operators]]\nname = \"o\"\ntoken_sha256 = \"00\"\n";
        fs::write(tmp.path().join("tiers/prod.toml"), tier).unwrap();
        let cr = request(
            ChangeKind::TierCredentials,
            "prod",
            json!({"cookie": "env:PROD_COOKIE", "upstream_token": "env:UP"}),
        );
        let edit = plan(tmp.path(), &cr).unwrap();
        let parsed: toml::Value = toml::from_str(&edit.after_text).unwrap();
        assert_eq!(parsed["keys"]["cookie"].as_str(), Some("env:PROD_COOKIE"));
        assert_eq!(parsed["keys"]["upstream_token"].as_str(), Some("env:UP"));
        assert_eq!(parsed["operators"][0]["name"].as_str(), Some("o"));
        assert!(
            edit.after_text
                .contains("# rotated yearly\ncookie = \"env:PROD_COOKIE\""),
            "{}",
            edit.after_text
        );
        assert_eq!(
            edit.before,
            json!({"cookie": "file:secrets/prod.key", "upstream_token": null})
        );
    }

    #[test]
    fn the_scratch_copy_mirrors_the_directory_and_goes_away() {
        let tmp = tempfile::tempdir().unwrap();
        for sub in ["tiers", "tenants", "secrets"] {
            fs::create_dir_all(tmp.path().join(sub)).unwrap();
        }
        fs::write(tmp.path().join("gateway.toml"), "x").unwrap();
        fs::write(tmp.path().join("tenants/a.toml"), "a").unwrap();
        fs::write(tmp.path().join("secrets/k"), "key").unwrap();
        let scratch = Scratch::copy_of(tmp.path()).unwrap();
        let path = scratch.path.clone();
        fs::write(path.join("tenants/a.toml"), "changed").unwrap();
        assert_eq!(
            fs::read_to_string(tmp.path().join("tenants/a.toml")).unwrap(),
            "a",
            "the copy wrote through"
        );
        assert_eq!(fs::read_to_string(path.join("secrets/k")).unwrap(), "key");
        drop(scratch);
        assert!(!path.exists());
        assert_eq!(fs::read_to_string(tmp.path().join("secrets/k")).unwrap(), "key");
    }
}
