//! Server-side secrets: values a spec refers to by name and a caller never sees.
//!
//! A spec writes `{{ secret.PAYMENTS_KEY }}` where a credential goes (a URL
//! path or query, a header, a body, a command's argv or `set_env`). The value
//! lives only on the server, in one of two places:
//!
//! - the environment variable `TOLLGATE_SECRET_<NAME>`, read once when
//!   tollgate starts (a process's environment cannot change from outside);
//! - a file `<secrets_dir>/<NAME>` (one file per secret, trailing newlines
//!   trimmed), read **when a call needs it**, so rotating the file takes
//!   effect on the next call without a restart. Unchanged files are served
//!   from a cache keyed by inode, size and times, so a call costs a `stat`
//!   per file rather than a read.
//!
//! When both define a name, **the environment wins**: it is the more
//! deliberate, per-process setting (a test or an operator overriding one
//! value), while the directory is usually a mounted store shared by many.
//!
//! Names are `[A-Z][A-Z0-9_]*`. Files with other names in the directory
//! (dotfiles such as Kubernetes' `..data`, editor backups) are ignored.
//!
//! Three things keep values out of everything tollgate writes or returns:
//!
//! 1. Values are never formatted: [`Secrets`] and [`Redactor`] implement
//!    `Debug` by hand and show names only; errors name a secret, never its
//!    content.
//! 2. [`Redactor`] replaces every occurrence of every defined value (and its
//!    percent-, form- and JSON-encoded forms, which is how a value echoed by
//!    an upstream usually comes back) with `[redacted:NAME]`. The pipeline
//!    applies it to a tool's output and failure messages before anything
//!    else (receipt, reply, log) sees them.
//! 3. Input properties marked `x-sensitive: true` are stored in receipts as a
//!    keyed hash ([`mask_sensitive`]): an auditor can still tell whether two
//!    calls used the same value, but the database does not hold it, and
//!    without the key even a guessable value cannot be confirmed offline.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Environment variables with this prefix define secrets (`TOLLGATE_SECRET_X` → `X`).
pub const ENV_PREFIX: &str = "TOLLGATE_SECRET_";

/// The secret that, when defined, keys the receipt hashes of `x-sensitive`
/// arguments (instead of the key file next to the database).
pub const RECEIPT_HMAC_KEY: &str = "RECEIPT_HMAC_KEY";

/// Values shorter than this are still redacted, but warned about at load:
/// short strings occur by chance in ordinary output, so their redaction
/// mangles results and hints at the value.
pub const MIN_SECRET_BYTES: usize = 8;

/// What a keyed hash of an `x-sensitive` argument starts with in receipts.
pub const HASH_PREFIX: &str = "hmac-sha256:";

/// The schema keyword that marks an input property as sensitive.
pub const SENSITIVE_KEYWORD: &str = "x-sensitive";

/// Length of a generated receipt HMAC key.
const KEY_BYTES: usize = 32;

/// Largest secret file read: a bigger file is a mistake (a mis-pointed
/// directory), not a credential.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
/// The same set the `http` executor uses for URL components.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `application/x-www-form-urlencoded` (space becomes `+` separately).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// A secret's value; wiped from memory when dropped.
pub type SecretValue = Zeroizing<String>;

/// Why secrets could not be loaded or read. Messages name secrets and files,
/// never values.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read the secrets directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret `{name}` from {origin}: {why}")]
    Value {
        name: String,
        origin: String,
        why: String,
    },
    #[error("secret `{name}` is not defined; {hint}")]
    Undefined { name: String, hint: String },
    #[error("receipt HMAC key file {}: {why}", path.display())]
    KeyFile { path: PathBuf, why: String },
}

/// `[A-Z][A-Z0-9_]*`: the names `{{ secret.NAME }}` accepts. Upper case
/// only, so a name reads the same as its `TOLLGATE_SECRET_NAME` variable.
pub fn is_secret_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// The receipt HMAC key file for the database at `db`: `<db>.hmac-key`.
pub fn key_file_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".hmac-key");
    PathBuf::from(name)
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// What the directory held when last looked at.
#[derive(Default)]
struct DirCache {
    /// The directory's own stamp at the last listing (entries added,
    /// removed or renamed change it).
    listed: Option<Stamp>,
    names: Vec<String>,
    files: BTreeMap<String, (Stamp, Arc<SecretValue>)>,
}

/// Every secret tollgate knows: the environment's (fixed at start) and the
/// secrets directory's (read at call time).
///
/// Shared as `Arc<Secrets>` by every compiled tool, so values are looked up
/// when a call runs, never baked into a compiled executor.
pub struct Secrets {
    env: BTreeMap<String, Arc<SecretValue>>,
    dir: Option<PathBuf>,
    cache: Mutex<DirCache>,
    /// Where the receipt HMAC key is kept when `RECEIPT_HMAC_KEY` is not defined.
    key_file: Option<PathBuf>,
    /// The key from `key_file` (or a per-process one), once read.
    file_key: Mutex<Option<Arc<Zeroizing<Vec<u8>>>>>,
}

impl fmt::Debug for Secrets {
    /// Names only: a value must never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Default for Secrets {
    fn default() -> Self {
        Secrets::empty()
    }
}

impl Secrets {
    /// No secrets at all (tests, benchmarks, tools that need none).
    pub fn empty() -> Secrets {
        Secrets {
            env: BTreeMap::new(),
            dir: None,
            cache: Mutex::default(),
            key_file: None,
            file_key: Mutex::default(),
        }
    }

    /// Secrets from this process's environment and, if given, `dir`.
    /// Warns (tracing) about values shorter than [`MIN_SECRET_BYTES`].
    pub fn load(dir: Option<&Path>) -> Result<Secrets, SecretsError> {
        let secrets = Secrets::from_vars(std::env::vars_os(), dir)?;
        for name in secrets.short_names() {
            tracing::warn!(
                secret = %name,
                "secret `{name}` is shorter than {MIN_SECRET_BYTES} bytes; it is still redacted, but short values also match ordinary text"
            );
        }
        Ok(secrets)
    }

    /// Like [`load`](Self::load), with the environment given explicitly
    /// (variables without the [`ENV_PREFIX`] are ignored). Every file in
    /// `dir` is read once, so an unreadable secret fails start-up rather
    /// than a call.
    pub fn from_vars<K, V>(
        vars: impl IntoIterator<Item = (K, V)>,
        dir: Option<&Path>,
    ) -> Result<Secrets, SecretsError>
    where
        K: Into<std::ffi::OsString>,
        V: Into<std::ffi::OsString>,
    {
        let mut env = BTreeMap::new();
        for (key, value) in vars {
            let key = key.into();
            let Some(name) = key.to_str().and_then(|k| k.strip_prefix(ENV_PREFIX)) else {
                continue;
            };
            if !is_secret_name(name) {
                tracing::warn!(
                    variable = %key.to_string_lossy(),
                    "ignoring {}: a secret name is an upper-case letter followed by A-Z, 0-9 and `_`",
                    key.to_string_lossy()
                );
                continue;
            }
            let value =
                Zeroizing::new(
                    value
                        .into()
                        .into_string()
                        .map_err(|_| SecretsError::Value {
                            name: name.to_owned(),
                            origin: format!("{ENV_PREFIX}{name}"),
                            why: "the value is not valid UTF-8".to_owned(),
                        })?,
                );
            env.insert(name.to_owned(), Arc::new(value));
        }
        let secrets = Secrets {
            env,
            dir: dir.map(Path::to_path_buf),
            ..Secrets::empty()
        };
        if let Some(dir) = &secrets.dir {
            let mut cache = secrets.lock();
            secrets.list(&mut cache)?;
            for name in cache.names.clone() {
                secrets.read_file(dir, &name, &mut cache)?;
            }
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if !name.starts_with('.') && !is_secret_name(&name) {
                    tracing::warn!(
                        file = %entry.path().display(),
                        "ignoring {} in the secrets directory: a secret name is an upper-case letter followed by A-Z, 0-9 and `_`",
                        entry.path().display()
                    );
                }
            }
        }
        Ok(secrets)
    }

    /// Keep the receipt HMAC key in `path` (see [`hash_key`](Self::hash_key)).
    pub fn with_key_file(mut self, path: impl Into<PathBuf>) -> Secrets {
        self.key_file = Some(path.into());
        self
    }

    /// The secrets directory, if one is configured.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn lock(&self) -> MutexGuard<'_, DirCache> {
        // The cache holds no invariant a panic could break halfway.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of `name` now: the environment's, else the directory file's
    /// (re-read if it changed since last time). An unreadable file counts as
    /// undefined and is logged (by name).
    pub fn get(&self, name: &str) -> Option<SecretValue> {
        self.lookup(name)
            .map(|v| Zeroizing::new(v.as_str().to_owned()))
    }

    fn lookup(&self, name: &str) -> Option<Arc<SecretValue>> {
        if let Some(v) = self.env.get(name) {
            return Some(v.clone());
        }
        let dir = self.dir.as_deref()?;
        if !is_secret_name(name) {
            return None;
        }
        let mut cache = self.lock();
        match self.read_file(dir, name, &mut cache) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "cannot read a secret file");
                None
            }
        }
    }

    /// Whether `name` has a value now.
    pub fn is_defined(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// Every defined name (environment and directory), sorted.
    pub fn names(&self) -> BTreeSet<String> {
        self.values().into_iter().map(|(name, _)| name).collect()
    }

    /// Names whose value is shorter than [`MIN_SECRET_BYTES`].
    pub fn short_names(&self) -> BTreeSet<String> {
        self.values()
            .into_iter()
            .filter(|(_, v)| v.len() < MIN_SECRET_BYTES)
            .map(|(name, _)| name)
            .collect()
    }

    /// How to define `name`, for messages: `set TOLLGATE_SECRET_X or create <dir>/X`.
    pub fn define_hint(&self, name: &str) -> String {
        match &self.dir {
            Some(dir) => format!(
                "set {ENV_PREFIX}{name} or create {}",
                dir.join(name).display()
            ),
            None => format!(
                "set {ENV_PREFIX}{name}, or set `secrets_dir` in the config file and create a file named {name} there"
            ),
        }
    }

    /// The current values of `names`, for one call. Fails on the first name
    /// that has no value (a file removed since start-up).
    pub fn resolve<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<Resolved, SecretsError> {
        let mut map = Map::new();
        for name in names {
            let value = self.lookup(name).ok_or_else(|| SecretsError::Undefined {
                name: name.to_owned(),
                hint: self.define_hint(name),
            })?;
            map.insert(name.to_owned(), Value::String(value.as_str().to_owned()));
        }
        Ok(Resolved(map))
    }

    /// Every defined (name, value), including directory values shadowed by
    /// the environment: both are secret, so both are redacted.
    fn values(&self) -> Vec<(String, Arc<SecretValue>)> {
        let mut out: Vec<(String, Arc<SecretValue>)> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(dir) = self.dir.as_deref() {
            let mut cache = self.lock();
            if let Err(e) = self.list(&mut cache) {
                tracing::warn!(error = %e, "cannot list the secrets directory; redacting with the last known secrets");
            }
            for name in cache.names.clone() {
                match self.read_file(dir, &name, &mut cache) {
                    Ok(Some(v)) => out.push((name, v)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(secret = %name, error = %e, "cannot read a secret file");
                        // Keep redacting what it held before.
                        if let Some((_, v)) = cache.files.get(&name) {
                            out.push((name, v.clone()));
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0 && a.1.as_str() == b.1.as_str());
        out
    }

    /// Refresh the list of secret files if the directory changed.
    fn list(&self, cache: &mut DirCache) -> Result<(), SecretsError> {
        let Some(dir) = self.dir.as_deref() else {
            return Ok(());
        };
        let dir_err = |source| SecretsError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        let stamp = Stamp::of(&std::fs::metadata(dir).map_err(dir_err)?);
        if cache.listed == Some(stamp) {
            return Ok(());
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            if let Some(name) = entry.file_name().to_str()
                && is_secret_name(name)
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        cache.files.retain(|k, _| names.contains(k));
        cache.names = names;
        cache.listed = Some(stamp);
        Ok(())
    }

    /// The value in `dir/name`, from the cache when the file is unchanged.
    /// Symlinks are followed (Kubernetes mounts secrets as links into a
    /// `..data` directory that is swapped atomically on rotation).
    fn read_file(
        &self,
        dir: &Path,
        name: &str,
        cache: &mut DirCache,
    ) -> Result<Option<Arc<SecretValue>>, SecretsError> {
        let path = dir.join(name);
        let err = |why: String| SecretsError::Value {
            name: name.to_owned(),
            origin: path.display().to_string(),
            why,
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                cache.files.remove(name);
                return Ok(None);
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let stamp = Stamp::of(&meta);
        if let Some((seen, value)) = cache.files.get(name)
            && *seen == stamp
        {
            return Ok(Some(value.clone()));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(err(format!(
                "the file is {} bytes; a secret file holds at most {MAX_FILE_BYTES}",
                meta.len()
            )));
        }
        let mut bytes = Zeroizing::new(Vec::new());
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| err(e.to_string()))?;
        let mut text = match std::str::from_utf8(&bytes) {
            Ok(t) => Zeroizing::new(t.to_owned()),
            Err(_) => return Err(err("the file is not valid UTF-8".to_owned())),
        };
        // Editors and `echo` add a final newline that is not part of the value.
        let kept = text.trim_end_matches(['\n', '\r']).len();
        text.truncate(kept);
        let value = Arc::new(text);
        cache.files.insert(name.to_owned(), (stamp, value.clone()));
        Ok(Some(value))
    }

    /// A snapshot of every current value, to redact one call's output.
    pub fn redactor(&self) -> Redactor {
        if self.env.is_empty() && self.dir.is_none() {
            return Redactor::default();
        }
        Redactor::new(self.values())
    }

    /// `text` with every occurrence of a secret value replaced by
    /// `[redacted:NAME]` (see [`Redactor`]).
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.redactor().redact(text)
    }

    /// Redact every string (and object key) in `value`.
    pub fn redact_json(&self, value: &mut Value) {
        self.redactor().redact_json(value);
    }

    /// The key for receipt hashes of `x-sensitive` arguments.
    ///
    /// It is the secret `RECEIPT_HMAC_KEY` when defined (so several
    /// tollgates can share one, and hashes survive a database move);
    /// otherwise 32 random bytes kept in the key file (see
    /// [`with_key_file`](Self::with_key_file), `<db>.hmac-key`), created
    /// with mode 0600 on first use and reused after. Without a key file
    /// (tests) the key is random per process.
    pub fn hash_key(&self) -> Result<HashKey, SecretsError> {
        if let Some(v) = self.lookup(RECEIPT_HMAC_KEY) {
            return Ok(HashKey(Arc::new(Zeroizing::new(v.as_bytes().to_vec()))));
        }
        let mut slot = self.file_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = slot.as_ref() {
            return Ok(HashKey(key.clone()));
        }
        let key = match &self.key_file {
            Some(path) => read_or_create_key(path)?,
            None => random_key().map_err(|why| SecretsError::KeyFile {
                path: PathBuf::new(),
                why,
            })?,
        };
        let key = Arc::new(key);
        *slot = Some(key.clone());
        Ok(HashKey(key))
    }

    /// `args` as a receipt should hold them: [`mask_sensitive`] with
    /// [`hash_key`](Self::hash_key).
    pub fn mask_args(&self, schema: &Value, args: &Value) -> Result<Value, SecretsError> {
        if !has_sensitive(schema) {
            return Ok(args.clone());
        }
        let key = self.hash_key()?;
        Ok(mask_sensitive(schema, args, key.as_bytes()))
    }
}

/// A key for [`keyed_hash`]; wiped when the last copy is dropped.
#[derive(Clone)]
pub struct HashKey(Arc<Zeroizing<Vec<u8>>>);

impl HashKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

fn random_key() -> Result<Zeroizing<Vec<u8>>, String> {
    let mut key = Zeroizing::new(vec![0u8; KEY_BYTES]);
    getrandom::fill(key.as_mut_slice()).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(key)
}

/// Read the key file, or create it: written to a private temporary file
/// first and then hard-linked into place, so two processes starting at once
/// agree on one key and nobody ever reads a half-written one.
fn read_or_create_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    let err = |why: String| SecretsError::KeyFile {
        path: path.to_path_buf(),
        why,
    };
    match std::fs::metadata(path) {
        Ok(_) => return read_key(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let key = random_key().map_err(err)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&key)?;
            f.sync_all()
        });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the receipt HMAC key file");
            Ok(key)
        }
        // Another process won the race: use its key.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(path),
        Err(e) => Err(err(format!("cannot create it: {e}"))),
    }
}

fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
    let err = |why: String| SecretsError::KeyFile {
        path: path.to_path_buf(),
        why,
    };
    let mut key = Zeroizing::new(Vec::new());
    let meta = std::fs::File::open(path)
        .and_then(|f| {
            let meta = f.metadata()?;
            f.take(KEY_BYTES as u64 + 1).read_to_end(&mut key)?;
            Ok(meta)
        })
        .map_err(|e| err(e.to_string()))?;
    if key.len() != KEY_BYTES {
        return Err(err(format!(
            "it holds {} bytes, not {KEY_BYTES}; restore it from a backup, or remove it to start a new key (earlier receipt hashes then no longer compare)",
            key.len()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "the receipt HMAC key file is readable by other users; chmod 600 it");
    }
    Ok(key)
}

/// One call's secret values by name, for template lookup. The strings are
/// wiped when it is dropped.
pub struct Resolved(Map<String, Value>);

impl Resolved {
    /// No secrets (a tool that references none).
    pub fn none() -> Resolved {
        Resolved(Map::new())
    }

    pub fn map(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl Drop for Resolved {
    fn drop(&mut self) {
        for value in self.0.values_mut() {
            if let Value::String(s) = value {
                s.zeroize();
            }
        }
    }
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Resolved")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Replaces secret values in text with `[redacted:NAME]`.
///
/// Every defined value is searched for, not only the ones the tool refers
/// to: a command may print its whole environment, an upstream may echo a
/// header another tool set. Longer values are matched first, so a secret
/// that contains another is reported under its own name; an occurrence
/// inside a longer one is not matched again. Occurrences that overlap
/// without one containing the other are merged into one redacted span (with
/// both markers), so no fragment of either survives.
#[derive(Default)]
pub struct Redactor {
    /// (name, text to find), longest text first.
    patterns: Vec<(Arc<str>, Zeroizing<String>)>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.patterns.iter().map(|(n, _)| &**n).collect();
        names.dedup();
        f.debug_struct("Redactor").field("names", &names).finish()
    }
}

impl Redactor {
    fn new(values: Vec<(String, Arc<SecretValue>)>) -> Redactor {
        let mut patterns: Vec<(Arc<str>, Zeroizing<String>)> = Vec::new();
        for (name, value) in values {
            if value.is_empty() {
                continue;
            }
            let name: Arc<str> = name.into();
            for form in encoded_forms(&value) {
                if !patterns.iter().any(|(n, p)| *n == name && **p == *form) {
                    patterns.push((name.clone(), form));
                }
            }
        }
        patterns.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        Redactor { patterns }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `text` with every secret occurrence replaced.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.patterns.is_empty() || text.is_empty() {
            return Cow::Borrowed(text);
        }
        // Matches as (start, end, name), keeping only those not inside a
        // match of an earlier (longer) pattern.
        let mut found: Vec<(usize, usize, &Arc<str>)> = Vec::new();
        for (name, pattern) in &self.patterns {
            let step = pattern.chars().next().map_or(1, char::len_utf8);
            let mut from = 0;
            while let Some(i) = text[from..].find(pattern.as_str()) {
                let start = from + i;
                let end = start + pattern.len();
                if !found.iter().any(|&(s, e, _)| s <= start && end <= e) {
                    found.push((start, end, name));
                }
                // Overlapping occurrences of one value are all found.
                from = start + step;
            }
        }
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        found.sort_by_key(|&(s, e, _)| (s, std::cmp::Reverse(e)));
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut i = 0;
        while i < found.len() {
            let (start, mut end, name) = found[i];
            let mut names: Vec<&Arc<str>> = vec![name];
            i += 1;
            while i < found.len() && found[i].0 < end {
                end = end.max(found[i].1);
                if !names.contains(&found[i].2) {
                    names.push(found[i].2);
                }
                i += 1;
            }
            out.push_str(&text[at..start]);
            for name in names {
                out.push_str("[redacted:");
                out.push_str(name);
                out.push(']');
            }
            at = end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// Redact every string and object key in `value`, in place.
    pub fn redact_json(&self, value: &mut Value) {
        if self.patterns.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(new) = self.redact(s) {
                    *s = new;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let changed = map.keys().any(|k| matches!(self.redact(k), Cow::Owned(_)));
                if changed {
                    let old = std::mem::take(map);
                    for (k, v) in old {
                        map.insert(self.redact(&k).into_owned(), v);
                    }
                }
                map.values_mut().for_each(|v| self.redact_json(v));
            }
            _ => {}
        }
    }
}

/// The forms a value takes on its way out and back: as is, percent-encoded
/// (a URL path), form-encoded (a query string), JSON-escaped (inside a JSON
/// string in raw response text).
fn encoded_forms(value: &str) -> Vec<Zeroizing<String>> {
    let mut forms = vec![Zeroizing::new(value.to_owned())];
    let mut add = |form: String| {
        if !form.is_empty() && !forms.iter().any(|f| **f == form) {
            forms.push(Zeroizing::new(form));
        }
    };
    add(utf8_percent_encode(value, COMPONENT).to_string());
    add(utf8_percent_encode(value, FORM)
        .to_string()
        .replace("%20", "+"));
    let json = Value::String(value.to_owned()).to_string();
    add(json[1..json.len() - 1].to_owned());
    forms
}

/// `"hmac-sha256:<hex>"` of the canonical JSON of `value` under `key`.
pub fn keyed_hash(key: &[u8], value: &Value) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(crate::canonical::to_string(value).as_bytes());
    format!("{HASH_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether the property schema says `x-sensitive: true`.
fn is_sensitive(schema: &Value) -> bool {
    schema.get(SENSITIVE_KEYWORD) == Some(&Value::Bool(true))
}

/// Whether any property of `schema`, at any depth of `properties` (and
/// array `items`), is marked `x-sensitive: true`.
pub fn has_sensitive(schema: &Value) -> bool {
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|p| p.values());
    let items = schema.get("items").into_iter();
    props
        .chain(items)
        .any(|s| is_sensitive(s) || has_sensitive(s))
}

/// `args` with the value of every property marked `x-sensitive: true`
/// replaced by [`keyed_hash`]. Properties are followed through nested
/// `properties` and array `items`; composition keywords (`$ref`, `allOf`, …)
/// are not. Anything that is not an object is returned unchanged.
pub fn mask_sensitive(schema: &Value, args: &Value, key: &[u8]) -> Value {
    map_sensitive(schema, args, &|v| Value::String(keyed_hash(key, v)))
}

/// `args` with every `x-sensitive` value replaced by `with` (used when no
/// key is available: better an unverifiable receipt than a clear value).
pub fn replace_sensitive(schema: &Value, args: &Value, with: &Value) -> Value {
    map_sensitive(schema, args, &|_| with.clone())
}

fn map_sensitive(schema: &Value, args: &Value, f: &dyn Fn(&Value) -> Value) -> Value {
    let mut out = args.clone();
    if out.is_object() {
        mask_in(schema, &mut out, f);
    }
    out
}

fn mask_in(schema: &Value, value: &mut Value, f: &dyn Fn(&Value) -> Value) {
    let visit = |sub: &Value, v: &mut Value| {
        if is_sensitive(sub) {
            *v = f(v);
        } else {
            mask_in(sub, v, f);
        }
    };
    match value {
        Value::Object(map) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (name, sub) in props {
                if let Some(v) = map.get_mut(name) {
                    visit(sub, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                items.iter_mut().for_each(|v| visit(item, v));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(vars: &[(&str, &str)], dir: Option<&Path>) -> Secrets {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (format!("{ENV_PREFIX}{k}"), v.to_string()))
            .collect();
        Secrets::from_vars(vars, dir).unwrap()
    }

    #[test]
    fn names_are_upper_case() {
        for good in ["A", "PAYMENTS_KEY", "K2", "X_"] {
            assert!(is_secret_name(good), "{good}");
        }
        for bad in ["", "a", "Payments", "_X", "2K", "A-B", "A.B", "ÄB"] {
            assert!(!is_secret_name(bad), "{bad}");
        }
    }

    #[test]
    fn env_and_dir_and_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("FROM_DIR"), "dir-value-1\n").unwrap();
        std::fs::write(dir.path().join("BOTH"), "dir-loses\r\n").unwrap();
        std::fs::write(dir.path().join(".hidden"), "x").unwrap();
        std::fs::write(dir.path().join("lower"), "x").unwrap();
        let s = Secrets::from_vars(
            [
                ("TOLLGATE_SECRET_BOTH", "env-wins"),
                ("TOLLGATE_SECRET_ENV_ONLY", "env-value"),
                ("TOLLGATE_SECRET_bad", "ignored"),
                ("PATH", "/bin"),
            ],
            Some(dir.path()),
        )
        .unwrap();
        assert_eq!(s.get("FROM_DIR").unwrap().as_str(), "dir-value-1");
        assert_eq!(s.get("BOTH").unwrap().as_str(), "env-wins");
        assert_eq!(s.get("ENV_ONLY").unwrap().as_str(), "env-value");
        assert!(s.get("bad").is_none() && s.get("lower").is_none() && s.get("NOPE").is_none());
        assert!(s.is_defined("FROM_DIR") && !s.is_defined("NOPE"));
        let names: Vec<String> = s.names().into_iter().collect();
        assert_eq!(names, ["BOTH", "ENV_ONLY", "FROM_DIR"]);
        // The shadowed directory value is still redacted.
        assert_eq!(
            s.redact("dir-loses env-wins"),
            "[redacted:BOTH] [redacted:BOTH]"
        );
        assert_eq!(
            s.define_hint("X"),
            format!(
                "set TOLLGATE_SECRET_X or create {}",
                dir.path().join("X").display()
            )
        );
    }

    #[test]
    fn debug_shows_names_only() {
        let s = with(&[("API_KEY", "sk_live_abcdef123456")], None);
        let shown = format!(
            "{s:?} {:?} {:?}",
            s.redactor(),
            s.resolve(["API_KEY"]).unwrap()
        );
        assert!(shown.contains("API_KEY"), "{shown}");
        assert!(!shown.contains("sk_live"), "{shown}");
        assert!(!format!("{:?}", s.hash_key().unwrap()).contains('['));
    }

    #[test]
    fn missing_dir_and_bad_files_fail_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let err = Secrets::from_vars(Vec::<(String, String)>::new(), Some(&dir.path().join("no")))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read the secrets directory"),
            "{err}"
        );
        std::fs::write(dir.path().join("BIN"), [0xff, 0xfe, 0x00]).unwrap();
        let err = Secrets::from_vars(Vec::<(String, String)>::new(), Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret `BIN`") && err.contains("not valid UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn short_values_are_reported_and_still_redacted() {
        let s = with(&[("PIN", "4711"), ("LONG_ONE", "0123456789")], None);
        assert_eq!(s.short_names().into_iter().collect::<Vec<_>>(), ["PIN"]);
        assert_eq!(s.redact("pin=4711"), "pin=[redacted:PIN]");
    }

    #[test]
    fn rotation_in_the_dir_is_seen_at_call_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("TOKEN");
        std::fs::write(&file, "first-value-1234\n").unwrap();
        let s = with(&[], Some(dir.path()));
        assert_eq!(s.get("TOKEN").unwrap().as_str(), "first-value-1234");
        // Rewritten in place (same inode)...
        std::fs::write(&file, "second-value-5678\n").unwrap();
        assert_eq!(s.get("TOKEN").unwrap().as_str(), "second-value-5678");
        let resolved = s.resolve(["TOKEN"]).unwrap();
        assert_eq!(resolved.map()["TOKEN"], "second-value-5678");
        // ... and replaced by rename, as rotation tools do.
        let tmp = dir.path().join(".TOKEN.new");
        std::fs::write(&tmp, "third-value-9012").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(s.get("TOKEN").unwrap().as_str(), "third-value-9012");
        assert_eq!(s.redact("x third-value-9012"), "x [redacted:TOKEN]");
        // A secret added after start-up is redacted too; a removed one is gone.
        std::fs::write(dir.path().join("NEW_ONE"), "brand-new-secret").unwrap();
        assert_eq!(s.redact("brand-new-secret"), "[redacted:NEW_ONE]");
        std::fs::remove_file(&file).unwrap();
        assert!(!s.is_defined("TOKEN"));
        let err = s.resolve(["TOKEN"]).unwrap_err().to_string();
        assert!(err.starts_with("secret `TOKEN` is not defined"), "{err}");
    }

    #[test]
    fn redaction_longest_first_and_overlaps() {
        let s = with(
            &[
                ("INNER", "abcdefgh"),
                ("OUTER", "xxabcdefghyy"),
                ("LEFT", "123456789"),
                ("RIGHT", "6789ABCDEF"),
            ],
            None,
        );
        // A value containing another is reported under its own name.
        assert_eq!(s.redact("a xxabcdefghyy b"), "a [redacted:OUTER] b");
        assert_eq!(s.redact("a abcdefgh b"), "a [redacted:INNER] b");
        // Overlapping values leave no fragment of either.
        assert_eq!(
            s.redact("<123456789ABCDEF>"),
            "<[redacted:LEFT][redacted:RIGHT]>"
        );
        // Repeated and adjacent occurrences.
        assert_eq!(
            s.redact("abcdefghabcdefgh"),
            "[redacted:INNER][redacted:INNER]"
        );
        assert!(matches!(s.redact("nothing here"), Cow::Borrowed(_)));
        // A value that overlaps itself.
        let s = with(&[("AAA", "aaaaaaaa")], None);
        assert_eq!(s.redact("aaaaaaaaaa!"), "[redacted:AAA]!");
    }

    #[test]
    fn redaction_catches_encoded_forms() {
        let s = with(&[("KEY", "p@ss w/rd\"x")], None);
        assert_eq!(s.redact("/v1/p%40ss%20w%2Frd%22x"), "/v1/[redacted:KEY]");
        assert_eq!(s.redact("q=p%40ss+w%2Frd%22x"), "q=[redacted:KEY]");
        assert_eq!(
            s.redact(r#"{"auth":"p@ss w/rd\"x"}"#),
            r#"{"auth":"[redacted:KEY]"}"#
        );
    }

    #[test]
    fn redact_json_strings_and_keys() {
        let s = with(&[("TOKEN", "tok_1234567890")], None);
        let mut v = json!({
            "echo": "Bearer tok_1234567890",
            "list": ["tok_1234567890", 1, null],
            "tok_1234567890": {"deep": "x tok_1234567890 y"},
            "n": 5
        });
        s.redact_json(&mut v);
        assert_eq!(
            v,
            json!({
                "echo": "Bearer [redacted:TOKEN]",
                "list": ["[redacted:TOKEN]", 1, null],
                "[redacted:TOKEN]": {"deep": "x [redacted:TOKEN] y"},
                "n": 5
            })
        );
        let empty = Secrets::empty();
        assert!(empty.redactor().is_empty());
        assert_eq!(empty.redact("tok_1234567890"), "tok_1234567890");
    }

    #[test]
    fn mask_sensitive_nested_and_items() {
        let schema = json!({
            "type": "object",
            "properties": {
                "card": {"type": "string", "x-sensitive": true},
                "note": {"type": "string"},
                "owner": {"type": "object", "properties": {
                    "ssn": {"type": "string", "x-sensitive": true},
                    "name": {"type": "string"}
                }},
                "pins": {"type": "array", "items": {"type": "string", "x-sensitive": true}},
                "people": {"type": "array", "items": {"type": "object", "properties": {
                    "dob": {"x-sensitive": true}
                }}},
                "flag": {"x-sensitive": "yes"}
            }
        });
        assert!(has_sensitive(&schema));
        let key = b"k";
        let args = json!({
            "card": "4111111111111111",
            "note": "hi",
            "owner": {"ssn": "123-45-6789", "name": "Ann"},
            "pins": ["1234", "5678"],
            "people": [{"dob": {"y": 1990, "m": 1}}],
            "flag": "clear",
            "extra": "untouched"
        });
        let masked = mask_sensitive(&schema, &args, key);
        let hash = |v: Value| keyed_hash(key, &v);
        assert_eq!(
            masked,
            json!({
                "card": hash(json!("4111111111111111")),
                "note": "hi",
                "owner": {"ssn": hash(json!("123-45-6789")), "name": "Ann"},
                "pins": [hash(json!("1234")), hash(json!("5678"))],
                "people": [{"dob": hash(json!({"m": 1, "y": 1990}))}],
                "flag": "clear",
                "extra": "untouched"
            })
        );
        let text = masked.to_string();
        for clear in ["4111111111111111", "123-45-6789", "1234", "1990"] {
            assert!(!text.contains(clear), "{clear} in {text}");
        }
        assert!(masked["card"].as_str().unwrap().starts_with("hmac-sha256:"));
        assert_eq!(
            masked["card"].as_str().unwrap().len(),
            HASH_PREFIX.len() + 64
        );
        // Keyed: another key gives another hash; the hash is of canonical JSON.
        assert_ne!(
            mask_sensitive(&schema, &args, b"other")["card"],
            masked["card"]
        );
        assert_eq!(
            keyed_hash(key, &json!({"a": 1, "b": 2})),
            keyed_hash(key, &serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap())
        );
        // Non-objects are returned unchanged.
        assert_eq!(mask_sensitive(&schema, &json!("x"), key), json!("x"));
        assert_eq!(mask_sensitive(&schema, &json!([1]), key), json!([1]));
        assert!(!has_sensitive(
            &json!({"properties": {"a": {"type": "string"}}})
        ));
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let path = key_file_for(&db);
        assert_eq!(path, dir.path().join("t.db.hmac-key"));
        let s = Secrets::empty().with_key_file(&path);
        let k1 = s.hash_key().unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), k1.as_bytes());
        assert_eq!(k1.as_bytes().len(), 32);
        // A new process (a new Secrets) reuses it.
        let again = Secrets::empty().with_key_file(&path).hash_key().unwrap();
        assert_eq!(again.as_bytes(), k1.as_bytes());
        // RECEIPT_HMAC_KEY wins over the file.
        let s = with(&[(RECEIPT_HMAC_KEY, "configured-key-0123456789")], None).with_key_file(&path);
        assert_eq!(
            s.hash_key().unwrap().as_bytes(),
            b"configured-key-0123456789"
        );
        // A damaged file is an error, not a silent new key.
        std::fs::write(&path, b"short").unwrap();
        let err = Secrets::empty()
            .with_key_file(&path)
            .hash_key()
            .unwrap_err();
        assert!(err.to_string().contains("holds 5 bytes"), "{err}");
        // mask_args uses it.
        let s = Secrets::empty().with_key_file(dir.path().join("u.db.hmac-key"));
        let schema = json!({"properties": {"p": {"x-sensitive": true}}});
        let masked = s.mask_args(&schema, &json!({"p": "v"})).unwrap();
        assert_eq!(
            masked["p"],
            keyed_hash(s.hash_key().unwrap().as_bytes(), &json!("v"))
        );
    }
}
