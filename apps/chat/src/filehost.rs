//! File sharing with the `soju.im/FILEHOST` convention, on the WebSocket
//! listeners' HTTP router ([`crate::websocket`]).
//!
//! # What a client sees
//!
//! - ISUPPORT `soju.im/FILEHOST=<base>/upload` when the file host is on
//!   (`[filehost]`, default on with a data directory — history on, hence
//!   accounts — and a WebSocket listener) and a base URL is known:
//!   `filehost.public_url`, else `https://ADDR` of the first WebSocket TLS
//!   listener, else `http://ADDR` of a plaintext one bound to a loopback
//!   address. Plain HTTP on another address is never advertised.
//! - `POST /upload` with `Authorization: Basic` (account name and password,
//!   checked as SASL PLAIN checks them: the same [`crate::auth::sasl::Sasl`]
//!   machine, the owner shard's account lookup and the hashing pool; the
//!   shard never waits) or `Authorization: Bearer` with a session token
//!   (`FILEHOST TOKEN` over IRC, what the web client uses: see
//!   [`crate::upload_token`]), `Content-Length` (absent: 411; chunked bodies are
//!   refused with 411), an optional `Content-Disposition` naming the file.
//!   Answers: 401 with `WWW-Authenticate: Basic` for absent or wrong
//!   credentials (`Bearer ... error="invalid_token"` for a token that does
//!   not hold), 413 when the length is over `max_file_bytes` or over what
//!   is left of the account's `quota_bytes`, else — once the body is on disk
//!   — `201 Created` with `Location: <base>/files/<id>/<name>`.
//! - `OPTIONS /upload`: 204 with `Allow` and `Accept-Post`; `HEAD` of a
//!   file: its `GET` head alone (the spec's MUSTs).
//! - `GET /files/<id>/<name>`: the file, `Content-Type` from an allow-list
//!   by extension ([`content_type`]: images, plain text, PDF, audio and
//!   video; never HTML, SVG or scripts), otherwise
//!   `application/octet-stream` with `Content-Disposition: attachment`;
//!   always `X-Content-Type-Options: nosniff` and `Content-Security-Policy:
//!   default-src 'none'; sandbox`. The id is 32 lowercase hex digits and the
//!   name must be exactly what [`sanitize_name`] makes (letters, digits,
//!   `.`, `_`, `-`; no leading dot): anything else — `..`, `%2e`, encoded
//!   slashes, more segments — is 404 without touching the disk.
//!
//! # On disk
//!
//! `<data>/files/<id>/<name>` holds a file and `<data>/files/<id>/.account`
//! its owner's account name; uploads in progress are
//! `<data>/files/.tmp/<id>`, emptied at startup. A body is written to its
//! temporary file as it arrives (never held in memory: at most one read's
//! bytes), `fsync`ed, then renamed into place. A body that stalls longer
//! than `websocket.request_timeout_secs` gets 408 (the writes go to the page
//! cache; the one `fsync` per upload runs on the shard, a few milliseconds
//! its other connections wait, as the store's `sync = always` would); a stall, a disconnection
//! or an error deletes the temporary file and gives the quota back. Files
//! whose modification time is older than `expire_days` are deleted by a
//! sweep on shard 0 (at startup and then every `min(expiry / 4, 1 h)`).
//!
//! # Upgrades
//!
//! Once this process hands the data directory to a new one (see
//! [`crate::upgrade`]) it answers uploads with 503 and stops sweeping; files
//! are still served. The new process empties `.tmp` when it opens the
//! directory, so an upload in flight at that moment fails (500) and the
//! client retries, reaching the new process.
//!
//! # The quota across shards
//!
//! One account's uploads may run on every shard at once, so the bytes each
//! account uses are kept in one ledger shared by the shards
//! ([`FileHost::reserve`]: a mutex taken once when an upload starts, once
//! when it fails or a file expires — never per byte, never on a chat path).
//! An upload reserves its whole `Content-Length` before its body is read,
//! so the bound is exact: an account never holds more than `quota_bytes`
//! (finished files plus uploads in progress). The ledger is rebuilt at
//! startup from the files on disk.
//!
//! # Serving
//!
//! All of it runs on the shards through the framework (no side thread):
//! the upload's body comes through `on_data` of the connection, and a file
//! is sent in 64 KiB reads, stopping when the connection's send queue
//! passes the framework's high-water mark and going on at `on_drained`, so a
//! slow reader holds at most that much of a file in memory.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use shardline::Ctx;
use tracing::{info, warn};

use crate::{
    auth::sasl::{Output, Reply, Sasl, SaslConfig},
    commands::Flow,
    config::FileHostSection,
    mail::{ChatMsg, ClientRef},
    shard::{ChatShard, ChatTimer},
    upload_token::{self, Claim, TokenKey},
    websocket::http::{error_response, response, without_body, Request, Status},
    websocket::http_send,
};

/// The length of a file id (hex digits of 128 random bits).
pub const ID_LEN: usize = 32;
/// The longest file name kept, bytes.
pub const MAX_NAME: usize = 100;
/// The name a file gets when the upload names none.
pub const DEFAULT_NAME: &str = "file";
/// What one send of a file reads.
pub const CHUNK: usize = 64 * 1024;
/// The file holding a stored file's owner, beside it.
const ACCOUNT_FILE: &str = ".account";
/// The directory of uploads in progress.
const TMP_DIR: &str = ".tmp";

/// The file host: where files live and the quota ledger, shared by every
/// shard.
#[derive(Debug)]
pub struct FileHost {
    /// `<data>/files`.
    pub dir: PathBuf,
    /// The largest file, bytes.
    pub max_file: u64,
    /// What one account may store, bytes.
    pub quota: u64,
    /// How long files are kept.
    pub expiry: Duration,
    /// Bytes used (stored or reserved) per account.
    used: Mutex<HashMap<String, u64>>,
    /// The key of this process's session tokens ([`crate::upload_token`]).
    pub tokens: TokenKey,
}

impl FileHost {
    /// Opens `<data_dir>/files`, empties its temporary directory, rebuilds
    /// the ledger and deletes expired files.
    pub fn open(data_dir: &Path, config: &FileHostSection) -> io::Result<FileHost> {
        let dir = data_dir.join("files");
        let tmp = dir.join(TMP_DIR);
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let host = FileHost {
            dir,
            max_file: config.max_file_bytes,
            quota: config.quota_bytes,
            expiry: config.expiry(),
            used: Mutex::new(HashMap::new()),
            tokens: TokenKey::generate(),
        };
        let mut used = HashMap::new();
        for (_, account, size, _) in host.stored()? {
            *used.entry(account).or_insert(0) += size;
        }
        *host.ledger() = used;
        let expired = host.sweep(SystemTime::now());
        info!(dir = %host.dir.display(), expired, "file host ready");
        Ok(host)
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every stored file: its directory, account, size and modification time.
    fn stored(&self) -> io::Result<Vec<(PathBuf, String, u64, SystemTime)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str().filter(|n| valid_id(n)) else {
                continue;
            };
            let path = self.dir.join(id);
            let Ok(account) = fs::read_to_string(path.join(ACCOUNT_FILE)) else {
                continue;
            };
            for f in fs::read_dir(&path)? {
                let f = f?;
                if f.file_name() == ACCOUNT_FILE {
                    continue;
                }
                let meta = f.metadata()?;
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((path.clone(), account.clone(), meta.len(), mtime));
            }
        }
        Ok(out)
    }

    /// Deletes the files uploaded before `now - expiry` and gives their
    /// bytes back; returns how many went.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let stored = match self.stored() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "file host: cannot list the files to expire");
                return 0;
            }
        };
        let mut n = 0;
        for (path, account, size, mtime) in stored {
            let age = now.duration_since(mtime).unwrap_or(Duration::ZERO);
            if age < self.expiry {
                continue;
            }
            // Given back first: once a file is no longer served, its bytes
            // are free (a client that saw the 404 may upload at once).
            self.release(&account, size);
            match fs::remove_dir_all(&path) {
                Ok(()) => n += 1,
                Err(e) => {
                    *self.ledger().entry(account).or_insert(0) += size;
                    warn!(error = %e, path = %path.display(), "file host: cannot expire");
                }
            }
        }
        n
    }

    /// Reserves `bytes` of `account`'s quota; false (nothing reserved) if
    /// that would pass it.
    pub fn reserve(&self, account: &str, bytes: u64) -> bool {
        let mut used = self.ledger();
        let u = used.entry(account.to_string()).or_insert(0);
        match u.checked_add(bytes) {
            Some(total) if total <= self.quota => {
                *u = total;
                true
            }
            _ => false,
        }
    }

    /// Gives `bytes` of `account`'s quota back.
    pub fn release(&self, account: &str, bytes: u64) {
        let mut used = self.ledger();
        if let Some(u) = used.get_mut(account) {
            *u = u.saturating_sub(bytes);
            if *u == 0 {
                used.remove(account);
            }
        }
    }

    /// Bytes `account` uses (stored and reserved).
    pub fn used(&self, account: &str) -> u64 {
        self.ledger().get(account).copied().unwrap_or(0)
    }

    /// Where the file `/files/<id>/<name>` is, if the two are valid (nothing
    /// is checked on disk).
    pub fn path_of(&self, id: &str, name: &str) -> Option<PathBuf> {
        (valid_id(id) && valid_name(name)).then(|| self.dir.join(id).join(name))
    }

    /// Starts an upload of `length` bytes (already reserved) for `account`.
    pub fn begin(&self, account: String, name: String, length: u64) -> io::Result<Upload> {
        let id = new_id();
        let tmp = self.dir.join(TMP_DIR).join(&id);
        let file = File::create(&tmp)?;
        Ok(Upload {
            file,
            tmp,
            remaining: length,
            length,
            account,
            name,
            id,
            done: false,
        })
    }

    /// Writes `data` (at most what the upload still expects) to the upload.
    pub fn write(&self, up: &mut Upload, data: &[u8]) -> io::Result<usize> {
        let n = data
            .len()
            .min(usize::try_from(up.remaining).unwrap_or(usize::MAX));
        up.file.write_all(&data[..n])?;
        up.remaining -= n as u64;
        Ok(n)
    }

    /// Puts a complete upload in place; returns `<id>/<name>`.
    pub fn commit(&self, up: &mut Upload) -> io::Result<String> {
        up.file.sync_all()?;
        let dir = self.dir.join(&up.id);
        fs::create_dir(&dir)?;
        fs::write(dir.join(ACCOUNT_FILE), up.account.as_bytes())?;
        fs::rename(&up.tmp, dir.join(&up.name))?;
        up.done = true;
        Ok(format!("{}/{}", up.id, up.name))
    }

    /// Drops an unfinished upload: its temporary file and its reservation.
    pub fn abandon(&self, up: &mut Upload) {
        if !up.done {
            up.done = true;
            let _ = fs::remove_file(&up.tmp);
            self.release(&up.account, up.length);
        }
    }
}

/// An upload in progress (its temporary file is deleted and its reservation
/// given back by [`FileHost::abandon`], which the shard calls whenever the
/// upload ends without [`FileHost::commit`]).
#[derive(Debug)]
pub struct Upload {
    file: File,
    tmp: PathBuf,
    /// Bytes still expected.
    pub remaining: u64,
    length: u64,
    account: String,
    name: String,
    id: String,
    done: bool,
}

/// A fresh random id: 32 lowercase hex digits.
pub fn new_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; ID_LEN / 2];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `s` is a file id: exactly [`ID_LEN`] lowercase hex digits.
pub fn valid_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A safe file name from what a client sent: letters, digits, `.`, `_`,
/// `-` kept, every other character (slashes, backslashes, controls, spaces,
/// `%`, non-ASCII) becomes `_`; leading dots are dropped (no `.`, `..` or
/// hidden files) and runs of dots become one; at most [`MAX_NAME`] bytes, keeping the extension; empty
/// becomes [`DEFAULT_NAME`].
pub fn sanitize_name(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    // No `..` anywhere: runs of dots become one.
    let mut name = String::with_capacity(mapped.len());
    for c in mapped.trim_start_matches('.').chars() {
        if !(c == '.' && name.ends_with('.')) {
            name.push(c);
        }
    }
    if name.len() > MAX_NAME {
        let ext = name
            .rfind('.')
            .map(|i| name[i..].to_string())
            .filter(|e| e.len() <= 16)
            .unwrap_or_default();
        name.truncate(MAX_NAME - ext.len());
        // A cut just after a dot would put two dots before the extension.
        if !ext.is_empty() && name.ends_with('.') {
            name.pop();
        }
        name.push_str(&ext);
    }
    if name.is_empty() {
        DEFAULT_NAME.into()
    } else {
        name
    }
}

/// Whether `s` is a name [`sanitize_name`] could have made (and so safe as
/// one path segment).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && sanitize_name(s) == s
}

/// The file name of a `Content-Disposition` value (`filename="x"` or
/// `filename=x`; `filename*` is not read), before sanitizing.
pub fn disposition_name(value: &str) -> Option<&str> {
    value.split(';').map(str::trim).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("filename") {
            return None;
        }
        let v = v.trim();
        Some(
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v),
        )
    })
}

/// The account and password of an `Authorization: Basic` value.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    // A NUL would change the meaning of the SASL PLAIN message they go into.
    let ok = !user.is_empty() && !pass.is_empty() && !text.contains('\0');
    ok.then(|| (user.to_string(), pass.to_string()))
}

/// The Content-Type a stored file is served with, if its extension is on
/// the allow-list (types a browser shows without running anything).
pub fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "txt" | "log" => "text/plain; charset=utf-8",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "m4a" => "audio/mp4",
        _ => return None,
    })
}

/// The Content-Security-Policy of served files.
pub const FILE_CSP: &str = "default-src 'none'; sandbox";

/// What an HTTP connection of the file host is doing (`ChatShard::http_jobs`).
#[derive(Debug)]
pub enum HttpJob {
    /// A `POST /upload` whose credentials are being checked; its body waits
    /// in the framework's input buffer (reading paused).
    Auth {
        /// The body's length.
        length: u64,
        /// The sanitized file name.
        name: String,
        /// The account, once the check succeeded.
        account: Option<String>,
        /// The client sent `Expect: 100-continue`.
        expect_continue: bool,
    },
    /// A body being written to disk.
    Upload(Upload),
    /// A file being sent.
    Download {
        /// The file.
        file: File,
        /// Bytes still to send.
        remaining: u64,
    },
}

/// The `WWW-Authenticate` header of a 401.
const CHALLENGE: (&str, &str) = (
    "WWW-Authenticate",
    "Basic realm=\"filehost\", charset=\"UTF-8\"",
);

/// The `WWW-Authenticate` header of a 401 for a session token that does not
/// hold (RFC 6750).
const BEARER_REFUSED: (&str, &str) = (
    "WWW-Authenticate",
    "Bearer realm=\"filehost\", error=\"invalid_token\"",
);

impl ChatShard {
    /// `on_start`: the file host is served when on and a base URL is known;
    /// shard 0 sweeps expired files.
    pub(crate) fn filehost_start(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        let Some(host) = self.storage_filehost() else {
            return;
        };
        let base = match &self.info.config.filehost.public_url {
            Some(url) => Some(url.trim_end_matches('/').to_string()),
            None => {
                let ws: Vec<_> = ctx
                    .listeners()
                    .iter()
                    .filter(|l| self.ws_listeners.contains(&l.id))
                    .collect();
                ws.iter()
                    .find(|l| l.tls && !l.addr.ip().is_unspecified())
                    .map(|l| format!("https://{}", l.addr))
                    .or_else(|| {
                        ws.iter()
                            .find(|l| !l.tls && l.addr.ip().is_loopback())
                            .map(|l| format!("http://{}", l.addr))
                    })
            }
        };
        let Some(base) = base else {
            if self.me == 0 {
                warn!("filehost: no public_url and no WebSocket listener to derive one from (TLS, or plaintext on loopback): file host off");
            }
            return;
        };
        if self.me == 0 {
            let period = (host.expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
            ctx.set_interval(period, ChatTimer::FileSweep);
        }
        self.filehost = Some(host);
        self.filehost_base = Some(base);
    }

    /// The upload URL advertised in ISUPPORT, if the file host is on.
    pub(crate) fn filehost_url(&self) -> Option<String> {
        self.filehost
            .as_ref()
            .and(self.filehost_base.as_ref())
            .map(|b| format!("{b}/upload"))
    }

    /// `FILEHOST TOKEN`: a session token for uploads ([`crate::upload_token`]).
    pub(crate) fn cmd_filehost(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        let Some(sub) = p.first() else {
            return self.need_more_params(ctx, id, "FILEHOST");
        };
        if !sub.eq_ignore_ascii_case("TOKEN") {
            let shown = crate::reply::truncate(sub, 32);
            let text = "Unknown FILEHOST subcommand (TOKEN is the one there is)";
            self.send_fail_line(ctx, id, "FILEHOST", "INVALID_PARAMS", &[shown], text);
            return Flow::Next;
        }
        let (Some(host), Some(c)) = (self.filehost.as_ref(), self.clients.get(&id)) else {
            return Flow::Next;
        };
        let claim = c.account.as_ref().map(|account| Claim {
            shard: self.me,
            client: id,
            account: account.to_string(),
        });
        let Some(token) = claim.and_then(|cl| host.tokens.issue(&cl, upload_token::now_secs()))
        else {
            let text = "You must be logged in to an account to upload files";
            self.send_fail_line(ctx, id, "FILEHOST", "ACCOUNT_REQUIRED", &[], text);
            return Flow::Next;
        };
        let lifetime = upload_token::LIFETIME.to_string();
        let out = crate::reply::line(
            self.info.name(),
            "FILEHOST",
            &["TOKEN", &token, &lifetime],
            false,
        );
        self.send_line(ctx, id, &out);
        Flow::Next
    }

    /// A request to `/upload` or `/files/...`: returns what `on_data`
    /// consumed.
    pub(crate) fn filehost_request(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        req: &Request<'_>,
        used: usize,
        all: usize,
    ) -> usize {
        let Some(host) = self.filehost.clone() else {
            return all;
        };
        if req.path != "/upload" {
            let resp = self.file_get(ctx, id, &host, req);
            if let Some(bytes) = resp {
                self.http_close(ctx, id, &bytes);
            }
            return all;
        }
        match self.upload_start(ctx, id, &host, req) {
            Ok(()) => used,
            Err(bytes) => {
                self.http_close(ctx, id, &bytes);
                all
            }
        }
    }

    /// `POST /upload`'s head: checks it and starts the credential check.
    fn upload_start(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        host: &FileHost,
        req: &Request<'_>,
    ) -> Result<(), Vec<u8>> {
        let err = |s: Status| error_response(s, &[]);
        if req.method == "OPTIONS" {
            // The spec asks servers to take OPTIONS on the upload URI.
            return Err(response(
                Status::NO_CONTENT,
                &[("Allow", "OPTIONS, POST"), ("Accept-Post", "*/*")],
                None,
                true,
            ));
        }
        if req.method != "POST" {
            return Err(error_response(
                Status::METHOD_NOT_ALLOWED,
                &[("Allow", "OPTIONS, POST")],
            ));
        }
        if req.values("Transfer-Encoding").next().is_some() {
            return Err(err(Status::LENGTH_REQUIRED));
        }
        let length = match req.single("Content-Length") {
            Ok(Some(v))
                if !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()) =>
            {
                v.parse::<u64>().map_err(|_| err(Status::BAD_REQUEST))?
            }
            Ok(None) => return Err(err(Status::LENGTH_REQUIRED)),
            _ => return Err(err(Status::BAD_REQUEST)),
        };
        let authorization = req.single("Authorization").ok().flatten();
        let bearer = authorization.and_then(upload_token::parse_bearer);
        let basic = authorization.and_then(parse_basic);
        if bearer.is_none() && basic.is_none() {
            let said_bearer = authorization
                .and_then(|v| v.split(' ').next())
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer"));
            let refusal = if said_bearer {
                BEARER_REFUSED
            } else {
                CHALLENGE
            };
            return Err(error_response(Status::UNAUTHORIZED, &[refusal]));
        }
        if length > host.max_file {
            return Err(err(Status::PAYLOAD_TOO_LARGE));
        }
        let name = match req.single("Content-Disposition") {
            Ok(Some(v)) => sanitize_name(disposition_name(v).unwrap_or(DEFAULT_NAME)),
            Ok(None) => DEFAULT_NAME.to_string(),
            Err(_) => return Err(err(Status::BAD_REQUEST)),
        };
        if !self.owner.history.owns_files() {
            // Handed over to a new process (an upgrade): it takes uploads.
            return Err(error_response(Status::UNAVAILABLE, &[("Retry-After", "5")]));
        }
        let expect_continue = req.has_token("Expect", "100-continue");
        if let Some(token) = bearer {
            let Some(claim) = host.tokens.check(token, upload_token::now_secs()) else {
                return Err(error_response(Status::UNAUTHORIZED, &[BEARER_REFUSED]));
            };
            return self.upload_bearer(ctx, id, claim, length, name, expect_continue);
        }
        let Some((user, password)) = basic else {
            return Err(error_response(Status::UNAUTHORIZED, &[CHALLENGE]));
        };
        let Some(c) = self.clients.get_mut(&id) else {
            return Ok(());
        };
        // The same check as SASL PLAIN: the machine asks for the account
        // (its owner shard) and the password check (the pool); its answers
        // come back to `filehost_sasl`.
        let mut sasl = Sasl::new(SaslConfig::new(false), None);
        let mut outs = sasl.authenticate("PLAIN");
        use base64::Engine as _;
        let payload =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let chunks: Vec<&str> = payload
            .as_bytes()
            .chunks(400)
            .map(|c| std::str::from_utf8(c).unwrap_or("*"))
            .collect();
        for ch in &chunks {
            outs.extend(sasl.authenticate(ch));
        }
        if payload.len() % 400 == 0 {
            outs.extend(sasl.authenticate("+"));
        }
        c.auth.sasl = Some(Box::new(sasl));
        ctx.pause_reading(c.conn);
        self.http_jobs.insert(
            id,
            HttpJob::Auth {
                length,
                name,
                account: None,
                expect_continue,
            },
        );
        self.sasl_outputs(ctx, id, outs);
        Ok(())
    }

    /// A token whose MAC and expiry hold: ask the session's shard whether
    /// the session does (at once when it is this one).
    fn upload_bearer(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        claim: Claim,
        length: u64,
        name: String,
        expect_continue: bool,
    ) -> Result<(), Vec<u8>> {
        let Some(c) = self.clients.get(&id) else {
            return Ok(());
        };
        let conn = c.conn;
        if claim.shard >= ctx.shards() {
            return Err(error_response(Status::UNAUTHORIZED, &[BEARER_REFUSED]));
        }
        // The account is the token's; it is trusted only once the session's
        // shard has answered (`upload_session_answer`).
        self.http_jobs.insert(
            id,
            HttpJob::Auth {
                length,
                name,
                account: Some(claim.account.clone()),
                expect_continue,
            },
        );
        ctx.pause_reading(conn);
        if claim.shard == self.me {
            let alive = self.session_holds(claim.client, &claim.account);
            self.upload_session_answer(ctx, id, alive);
        } else {
            let msg = ChatMsg::SessionCheck {
                session: ClientRef {
                    shard: claim.shard,
                    id: claim.client,
                },
                account: claim.account,
                asker: ClientRef { shard: self.me, id },
            };
            self.outbox.post(ctx, shardline::ShardId(claim.shard), msg);
        }
        Ok(())
    }

    /// Whether client `id` of this shard is an IRC session still connected,
    /// not quitting, and logged in to `account` (a token's claim).
    pub(crate) fn session_holds(&self, id: u64, account: &str) -> bool {
        self.clients.get(&id).is_some_and(|c| {
            c.alive && c.quitting.is_none() && c.registered && c.account.as_deref() == Some(account)
        })
    }

    /// The session's shard answered for an upload's token.
    pub(crate) fn upload_session_answer(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        alive: bool,
    ) {
        if !matches!(self.http_jobs.get(&id), Some(HttpJob::Auth { .. })) {
            return; // the connection went away meanwhile
        }
        if alive {
            self.upload_accepted(ctx, id);
        } else {
            self.http_jobs.remove(&id);
            let bytes = error_response(Status::UNAUTHORIZED, &[BEARER_REFUSED]);
            self.http_close(ctx, id, &bytes);
        }
    }

    /// Takes the SASL outputs meant for an upload's credential check (the
    /// rest — the lookup, the password check — go on as for SASL).
    pub(crate) fn filehost_sasl(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        o: Output,
    ) -> Option<Output> {
        let Some(HttpJob::Auth { account, .. }) = self.http_jobs.get_mut(&id) else {
            return Some(o);
        };
        match o {
            Output::LoggedIn { account: a } => *account = Some(a),
            Output::Reply(Reply::Success) => self.upload_accepted(ctx, id),
            Output::Reply(
                Reply::Fail | Reply::NickLocked | Reply::TooLong | Reply::Aborted | Reply::Already,
            )
            | Output::Disconnect { .. } => {
                let bytes = error_response(Status::UNAUTHORIZED, &[CHALLENGE]);
                self.http_close(ctx, id, &bytes);
            }
            Output::Reply(_) => {}
            other => return Some(other),
        }
        None
    }

    /// The credentials are good: reserve the quota, open the temporary
    /// file, read the body.
    fn upload_accepted(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let Some(host) = self.filehost.clone() else {
            return;
        };
        let Some(HttpJob::Auth {
            length,
            name,
            account: Some(account),
            expect_continue,
        }) = self.http_jobs.remove(&id)
        else {
            let bytes = error_response(Status::UNAUTHORIZED, &[CHALLENGE]);
            self.http_close(ctx, id, &bytes);
            return;
        };
        if !host.reserve(&account, length) {
            let bytes = error_response(Status::PAYLOAD_TOO_LARGE, &[]);
            self.http_close(ctx, id, &bytes);
            return;
        }
        let up = match host.begin(account.clone(), name, length) {
            Ok(up) => up,
            Err(e) => {
                host.release(&account, length);
                warn!(error = %e, "filehost: cannot create an upload's file");
                let bytes = error_response(Status::INTERNAL, &[]);
                self.http_close(ctx, id, &bytes);
                return;
            }
        };
        self.http_jobs.insert(id, HttpJob::Upload(up));
        if length == 0 {
            self.upload_finish(ctx, id);
            return;
        }
        let timeout = self.info.config.websocket.request_timeout();
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if expect_continue {
            let _ = http_send(ctx, c.conn, b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        if let Some(t) = c.timer.take() {
            ctx.cancel_timer(t);
        }
        c.timer = Some(ctx.set_timer(timeout, ChatTimer::Client(id)));
        ctx.resume_reading(c.conn);
        ctx.redeliver(c.conn);
    }

    /// Bytes for a connection with a job: an upload's body.
    pub(crate) fn http_job_data(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        data: &[u8],
    ) -> usize {
        let Some(host) = self.filehost.clone() else {
            return data.len();
        };
        let Some(HttpJob::Upload(up)) = self.http_jobs.get_mut(&id) else {
            // Waiting for the credential check (the body stays buffered), or
            // sending a file (what the client sends is dropped).
            return match self.http_jobs.get(&id) {
                Some(HttpJob::Auth { .. }) => 0,
                _ => data.len(),
            };
        };
        match host.write(up, data) {
            Ok(_) if up.remaining == 0 => self.upload_finish(ctx, id),
            Ok(_) => {
                // The stall timer starts again with every piece of the body.
                let timeout = self.info.config.websocket.request_timeout();
                if let Some(c) = self.clients.get_mut(&id) {
                    if let Some(t) = c.timer.take() {
                        ctx.cancel_timer(t);
                    }
                    c.timer = Some(ctx.set_timer(timeout, ChatTimer::Client(id)));
                }
            }
            Err(e) => {
                warn!(error = %e, "filehost: cannot write an upload");
                let bytes = error_response(Status::INTERNAL, &[]);
                self.http_close(ctx, id, &bytes);
            }
        }
        data.len()
    }

    /// The whole body is on disk: put it in place and answer 201.
    fn upload_finish(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let (Some(host), Some(base)) = (self.filehost.clone(), self.filehost_base.clone()) else {
            return;
        };
        let Some(HttpJob::Upload(mut up)) = self.http_jobs.remove(&id) else {
            return;
        };
        let bytes = match host.commit(&mut up) {
            Ok(path) => {
                let location = format!("{base}/files/{path}");
                response(
                    Status::CREATED,
                    &[
                        ("Location", &location),
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("X-Content-Type-Options", "nosniff"),
                        ("Cache-Control", "no-store"),
                    ],
                    Some(format!("{location}\n").as_bytes()),
                    true,
                )
            }
            Err(e) => {
                host.abandon(&mut up);
                warn!(error = %e, "filehost: cannot store an upload");
                error_response(Status::INTERNAL, &[])
            }
        };
        self.http_close(ctx, id, &bytes);
    }

    /// `GET /files/<id>/<name>`: the head goes out and the file follows
    /// ([`ChatShard::file_pump`]); `Some`: an error response instead.
    fn file_get(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        host: &FileHost,
        req: &Request<'_>,
    ) -> Option<Vec<u8>> {
        let head_only = req.method == "HEAD";
        if req.method != "GET" && !head_only {
            return Some(error_response(
                Status::METHOD_NOT_ALLOWED,
                &[("Allow", "GET, HEAD")],
            ));
        }
        let not_found = || {
            let r = error_response(Status::NOT_FOUND, &[]);
            Some(if head_only { without_body(r) } else { r })
        };
        let rest = req.path.strip_prefix("/files/")?;
        let Some((fid, name)) = rest.split_once('/') else {
            return not_found();
        };
        let Some(path) = host.path_of(fid, name) else {
            return not_found();
        };
        let Ok(file) = File::open(&path) else {
            return not_found();
        };
        let size = match file.metadata() {
            Ok(m) if m.is_file() => m.len(),
            _ => return not_found(),
        };
        let length = size.to_string();
        let disposition = format!("attachment; filename=\"{name}\"");
        let mut headers = vec![("Content-Length", length.as_str())];
        match content_type(name) {
            Some(t) => headers.push(("Content-Type", t)),
            None => {
                headers.push(("Content-Type", "application/octet-stream"));
                headers.push(("Content-Disposition", &disposition));
            }
        }
        headers.extend([
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", FILE_CSP),
            ("Cache-Control", "private, max-age=86400"),
            ("Referrer-Policy", "no-referrer"),
        ]);
        let head = response(Status::OK, &headers, None, true);
        if head_only {
            return Some(head);
        }
        let c = self.clients.get_mut(&id)?;
        let _ = http_send(ctx, c.conn, &head);
        self.http_jobs.insert(
            id,
            HttpJob::Download {
                file,
                remaining: size,
            },
        );
        self.file_pump(ctx, id);
        None
    }

    /// The client timer of a download fired: it did not take a byte for
    /// `request_timeout_secs`, so it is closed (its head is out: no 408).
    /// True when it was a download.
    pub(crate) fn download_stalled(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) -> bool {
        if !matches!(self.http_jobs.get(&id), Some(HttpJob::Download { .. })) {
            return false;
        }
        self.http_jobs.remove(&id);
        self.begin_quit(ctx, id, "Download stalled".into());
        true
    }

    /// Sends the next pieces of a file until the connection's queue passes
    /// its high-water mark (`on_drained` calls again) or the file ends.
    pub(crate) fn file_pump(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        // The framework's marks (`framework_limits`): pause past the
        // high-water mark, and never queue past the hard limit (the SendQ).
        let hard = self.info.config.limits.sendq_bytes;
        let high = hard / 2;
        let Some(conn) = self.clients.get(&id).map(|c| c.conn) else {
            return;
        };
        let Some(HttpJob::Download { file, remaining }) = self.http_jobs.get_mut(&id) else {
            return;
        };
        let mut buf = vec![0u8; CHUNK];
        let mut sent = false;
        let failed = loop {
            if *remaining == 0 {
                break false;
            }
            if ctx.send_queue_len(conn).is_none_or(|q| q > high) {
                if sent {
                    // The stall timer starts again whenever the reader took
                    // enough for more to be sent.
                    let timeout = self.info.config.websocket.request_timeout();
                    if let Some(c) = self.clients.get_mut(&id) {
                        if let Some(t) = c.timer.take() {
                            ctx.cancel_timer(t);
                        }
                        c.timer = Some(ctx.set_timer(timeout, ChatTimer::Client(id)));
                    }
                }
                return;
            }
            let queued = ctx.send_queue_len(conn).unwrap_or(hard);
            let want = CHUNK
                .min(hard.saturating_sub(queued))
                .min(usize::try_from(*remaining).unwrap_or(CHUNK));
            if want == 0 {
                return;
            }
            match file.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break true,
                Ok(n) => {
                    *remaining -= n as u64;
                    sent = true;
                    if http_send(ctx, conn, &buf[..n]).is_err() {
                        break true;
                    }
                }
            }
        };
        self.http_jobs.remove(&id);
        if failed {
            // The length was promised: a short file can only end the
            // connection.
            self.begin_quit(ctx, id, "File read failed".into());
        } else {
            self.http_close(ctx, id, &[]);
        }
    }

    /// The client closed its side: an upload or credential check under way
    /// ends (its temporary file deleted). True when handled here.
    pub(crate) fn http_job_eof(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) -> bool {
        match self.http_jobs.get(&id) {
            Some(HttpJob::Upload(_) | HttpJob::Auth { .. }) => {
                self.http_job_end(id);
                self.begin_quit(ctx, id, "Upload cut short".into());
                true
            }
            _ => false,
        }
    }

    /// Drops connection `id`'s job, if any (an unfinished upload's temporary
    /// file and reservation go).
    pub(crate) fn http_job_end(&mut self, id: u64) {
        if let Some(HttpJob::Upload(mut up)) = self.http_jobs.remove(&id) {
            if let Some(host) = &self.filehost {
                host.abandon(&mut up);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizer() {
        assert_eq!(sanitize_name("photo.png"), "photo.png");
        assert_eq!(sanitize_name("../../etc/passwd"), "_._etc_passwd");
        assert_eq!(sanitize_name("a..b...png"), "a.b.png");
        assert_eq!(sanitize_name(".."), DEFAULT_NAME);
        assert_eq!(sanitize_name(".hidden"), "hidden");
        assert_eq!(sanitize_name("a\\b/c\r\n\0d"), "a_b_c___d");
        assert_eq!(sanitize_name("caf\u{e9} 1.txt"), "caf__1.txt");
        assert_eq!(sanitize_name("%2e%2e%2f"), "_2e_2e_2f");
        assert_eq!(sanitize_name(""), DEFAULT_NAME);
        let long = format!("{}.jpeg", "x".repeat(300));
        let s = sanitize_name(&long);
        assert_eq!(s.len(), MAX_NAME);
        assert!(s.ends_with(".jpeg"));
        // A fuzz finding: the cut to MAX_NAME fell just after a dot, and the
        // name came out with ".." before its extension (not a name its own
        // URL accepts).
        let cut = format!("{}.{}.1", "5".repeat(MAX_NAME - 3), "5".repeat(40));
        let s = sanitize_name(&cut);
        assert!(valid_name(&s) && !s.contains(".."), "{s}");
        assert!(s.len() <= MAX_NAME && s.ends_with(".1"), "{s}");
        for raw in [
            "../x",
            "a/b",
            ".",
            "x y",
            "%2e",
            "\u{202e}gpj.exe",
            "x/../..",
        ] {
            let s = sanitize_name(raw);
            assert!(valid_name(&s), "{raw:?} -> {s:?}");
            assert!(!s.contains('/') && !s.starts_with('.') && !s.contains(".."));
        }
    }

    #[test]
    fn names_and_ids() {
        assert!(valid_id(&new_id()));
        assert_ne!(new_id(), new_id());
        assert!(!valid_id("0123456789abcdef0123456789ABCDEF"));
        assert!(!valid_id("0123456789abcdef0123456789abcde"));
        assert!(!valid_id("../3456789abcdef0123456789abcdef"));
        assert!(valid_name("a.png"));
        for bad in ["", "..", ".x", "a/b", "a%2fb", "a b", "a\\b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        let host = FileHost {
            dir: PathBuf::from("/srv/files"),
            max_file: 1,
            quota: 1,
            expiry: Duration::from_secs(1),
            used: Mutex::new(HashMap::new()),
            tokens: TokenKey::generate(),
        };
        assert!(host.path_of(&"a".repeat(32), "..").is_none());
        assert!(host.path_of("..", "x").is_none());
        assert_eq!(
            host.path_of(&"a".repeat(32), "x.txt"),
            Some(PathBuf::from(format!(
                "/srv/files/{}/x.txt",
                "a".repeat(32)
            )))
        );
    }

    #[test]
    fn headers() {
        assert_eq!(
            disposition_name("attachment; filename=\"cat.png\""),
            Some("cat.png")
        );
        assert_eq!(disposition_name("inline; FILENAME=a.txt"), Some("a.txt"));
        assert_eq!(disposition_name("attachment"), None);
        assert_eq!(
            parse_basic("Basic YWxpY2U6c2VjcmV0OnB3"),
            Some(("alice".into(), "secret:pw".into()))
        );
        assert_eq!(parse_basic("Bearer YWxpY2U6c2VjcmV0"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic OnB3"), None, "no user");
        let nul = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "x\0alice:pw");
        assert_eq!(parse_basic(&format!("Basic {nul}")), None, "a NUL");
        assert_eq!(content_type("A.PNG"), Some("image/png"));
        for risky in ["x.html", "x.htm", "x.svg", "x.js", "x.xml", "noext"] {
            assert_eq!(content_type(risky), None, "{risky}");
        }
    }

    #[test]
    fn ledger_bounds() {
        let host = FileHost {
            dir: PathBuf::new(),
            max_file: 10,
            quota: 10,
            expiry: Duration::from_secs(1),
            used: Mutex::new(HashMap::new()),
            tokens: TokenKey::generate(),
        };
        assert!(host.reserve("a", 6));
        assert!(!host.reserve("a", 5));
        assert!(host.reserve("b", 10));
        assert!(!host.reserve("a", u64::MAX));
        host.release("a", 6);
        assert_eq!(host.used("a"), 0);
        assert!(host.reserve("a", 10));
    }
}
