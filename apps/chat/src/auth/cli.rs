//! The operator's offline account tool: `shardline-chat --data-dir DIR account
//! <command>`, over the same store the server uses ([`crate::store::open_all`],
//! so it refuses to run while a server holds the directory).
//!
//! ```text
//! account add NAME              create NAME; the password is read from standard input
//! account passwd NAME           set NAME's password (standard input)
//! account del NAME              delete NAME
//! account list                  list the accounts
//! account cert add NAME FP      let the TLS client certificate FP log in as NAME (EXTERNAL)
//! account cert del NAME FP      stop that
//! ```
//!
//! The password is one line of standard input. On a terminal it is read with
//! echo off, after a prompt on standard error, and asked twice; from a pipe
//! (`printf '%s\n' "$PW" | shardline-chat account add alice`) one line is
//! read, without a prompt. [`run_account_command`] does it all and returns
//! what to print; `main` only passes the arguments after `account` and
//! [`Terminal`] (tests pass a byte string).
//!
//! Accounts made here get the argon2 hash and the SCRAM-SHA-256 credential,
//! like `REGISTER`. Every change is synced to disk before the command
//! returns.

use std::{
    io::{self, BufRead, Write},
    path::Path,
};

use super::{
    password::{HashError, Password, PasswordPolicy, PolicyError},
    record::{new_account, normalize_fingerprint, Credentials},
};
use crate::{
    casemap::{casefold, valid_nick},
    store::{open_all, Account, OfflineStore, StoreError, StoreOptions, WriteError},
};

/// The usage text.
pub const USAGE: &str = "usage: shardline-chat [--data-dir DIR] account <command>
  add NAME             create an account (password from standard input)
  passwd NAME          change an account's password (standard input)
  del NAME             delete an account
  list                 list the accounts
  cert add NAME FP     let the TLS client certificate with SHA-256 fingerprint FP log in as NAME
  cert del NAME FP     remove that certificate from NAME";

/// Where the password comes from.
pub trait PasswordSource {
    /// Reads one password, showing `prompt` if there is someone to see it.
    fn read_password(&mut self, prompt: &str) -> io::Result<Password>;

    /// Whether a person types it (then a new password is asked twice).
    fn interactive(&self) -> bool {
        false
    }
}

/// Reads one line (without its `\n` or `\r\n`) as the password.
fn read_line_password(input: &mut dyn BufRead) -> io::Result<Password> {
    let mut line = Vec::new();
    let n = input.read_until(b'\n', &mut line)?;
    let line = Password::new(line);
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "no password on standard input",
        ));
    }
    let mut bytes = line.as_bytes();
    bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    Ok(Password::from_slice(bytes))
}

impl<R: BufRead> PasswordSource for R {
    fn read_password(&mut self, _prompt: &str) -> io::Result<Password> {
        read_line_password(self)
    }
}

/// The process's standard input: with echo off and a prompt on standard
/// error when it is a terminal.
#[derive(Debug, Default)]
pub struct Terminal;

/// Restores the terminal's settings when dropped.
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    /// Turns echo off on standard input if it is a terminal.
    fn new() -> Option<EchoOff> {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a termios we own;
        // no memory is shared with the kernel beyond the call.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(0, libc::TCSANOW, &quiet) != 0 {
                return None;
            }
            Some(EchoOff { saved })
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

impl PasswordSource for Terminal {
    fn read_password(&mut self, prompt: &str) -> io::Result<Password> {
        let guard = EchoOff::new();
        if guard.is_some() {
            let mut err = io::stderr();
            let _ = write!(err, "{prompt}");
            let _ = err.flush();
        }
        let stdin = io::stdin();
        let mut lock = stdin.lock();
        read_line_password(&mut lock)
    }

    fn interactive(&self) -> bool {
        // SAFETY: isatty only inspects the descriptor.
        unsafe { libc::isatty(0) == 1 }
    }
}

/// Why an account command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}\n{USAGE}")]
    Usage(String),
    /// The store would not open (or is in use by a running server).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store could not write the change; nothing changed.
    #[error("the change was not written: {0}")]
    Write(#[from] WriteError),
    /// No such account.
    #[error("no account named {0}")]
    NoSuchAccount(String),
    /// The account exists already.
    #[error("account {0} already exists")]
    Exists(String),
    /// Not a valid account name.
    #[error("invalid account name {0:?}: account names follow the nick rules (a letter or one of []\\`_^{{|}} first, then letters, digits, those or -, at most {1} bytes)")]
    BadName(String, usize),
    /// The password breaks the policy.
    #[error("password refused: {0}")]
    Password(#[from] PolicyError),
    /// The two passwords typed differ.
    #[error("the passwords do not match")]
    Mismatch,
    /// Standard input failed or was empty.
    #[error("reading the password: {0}")]
    Io(#[from] io::Error),
    /// Hashing failed.
    #[error("hashing the password: {0}")]
    Hash(#[from] HashError),
    /// Not a SHA-256 fingerprint.
    #[error("not a SHA-256 certificate fingerprint (64 hex digits, colons allowed): {0}")]
    BadFingerprint(String),
}

/// Settings of the account commands.
#[derive(Debug, Clone)]
pub struct AccountCommandOptions {
    /// The longest account name (`[limits] nicklen`).
    pub nicklen: usize,
    /// What a new password must be.
    pub policy: PasswordPolicy,
    /// How to open the store.
    pub store: StoreOptions,
    /// Tests only: the cheapest hashes.
    #[doc(hidden)]
    pub cheap_hashes: bool,
}

impl Default for AccountCommandOptions {
    fn default() -> Self {
        AccountCommandOptions {
            nicklen: 30,
            policy: PasswordPolicy::default(),
            store: StoreOptions::default(),
            cheap_hashes: false,
        }
    }
}

/// Runs `account <args...>` on the data directory `data_dir` with the default
/// options (`nicklen` 30, the default password policy); the password, where
/// one is needed, comes from `stdin`. Returns what to print.
pub fn run_account_command<S: AsRef<str>>(
    data_dir: &Path,
    args: &[S],
    stdin: &mut dyn PasswordSource,
) -> Result<String, CliError> {
    run_account_command_with(data_dir, args, stdin, &AccountCommandOptions::default())
}

/// [`run_account_command`] with options.
pub fn run_account_command_with<S: AsRef<str>>(
    data_dir: &Path,
    args: &[S],
    stdin: &mut dyn PasswordSource,
    options: &AccountCommandOptions,
) -> Result<String, CliError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    match args.as_slice() {
        ["add", name] => {
            check_name(name, options)?;
            let password = new_password(stdin, options)?;
            let mut store = open(data_dir, options)?;
            if store.account(name).is_some() {
                return Err(CliError::Exists((*name).to_string()));
            }
            let creds = credentials(&password, options)?;
            store.put_account(new_account(name, &creds, now_ms()))?;
            finish(store)?;
            Ok(format!("account {name} added\n"))
        }
        ["passwd", name] => {
            let mut store = open(data_dir, options)?;
            let mut account = existing(&store, name)?;
            let password = new_password(stdin, options)?;
            account.password_hash = credentials(&password, options)?.encode();
            store.put_account(account)?;
            finish(store)?;
            Ok(format!("password of {name} changed\n"))
        }
        ["del", name] => {
            let mut store = open(data_dir, options)?;
            let account = existing(&store, name)?;
            store.delete_account(&account.name)?;
            finish(store)?;
            Ok(format!("account {} deleted\n", account.name))
        }
        ["list"] => {
            let store = open(data_dir, options)?;
            let mut accounts: Vec<&Account> = store.accounts().collect();
            accounts.sort_by_cached_key(|a| casefold(&a.name));
            let mut out = String::new();
            for a in &accounts {
                let creds = Credentials::parse(&a.password_hash);
                let mut login = Vec::new();
                if creds.has_password() {
                    login.push("password");
                }
                if creds.scram.is_some() {
                    login.push("scram");
                }
                if !a.cert_fingerprints.is_empty() {
                    login.push("certificate");
                }
                out.push_str(&format!(
                    "{}  created {}  certificates {}  login {}\n",
                    a.name,
                    format_time(a.created),
                    a.cert_fingerprints.len(),
                    if login.is_empty() {
                        "none".to_string()
                    } else {
                        login.join(",")
                    },
                ));
            }
            out.push_str(&format!(
                "{} account{}\n",
                accounts.len(),
                if accounts.len() == 1 { "" } else { "s" }
            ));
            drop(accounts);
            finish(store)?;
            Ok(out)
        }
        ["cert", op @ ("add" | "del"), name, fp] => {
            let fp = normalize_fingerprint(fp)
                .ok_or_else(|| CliError::BadFingerprint((*fp).to_string()))?;
            let mut store = open(data_dir, options)?;
            let mut account = existing(&store, name)?;
            let had = account
                .cert_fingerprints
                .iter()
                .any(|f| normalize_fingerprint(f).as_deref() == Some(&fp));
            let message = if *op == "add" {
                if had {
                    return Ok(format!("{} already has certificate {fp}\n", account.name));
                }
                account.cert_fingerprints.push(fp.clone());
                format!("certificate {fp} added to {}\n", account.name)
            } else {
                if !had {
                    return Ok(format!("{} has no certificate {fp}\n", account.name));
                }
                account
                    .cert_fingerprints
                    .retain(|f| normalize_fingerprint(f).as_deref() != Some(&fp));
                format!("certificate {fp} removed from {}\n", account.name)
            };
            store.put_account(account)?;
            finish(store)?;
            Ok(message)
        }
        [] => Err(CliError::Usage("no account command given".into())),
        [cmd, ..] => Err(CliError::Usage(format!(
            "unknown account command or wrong arguments: {cmd}"
        ))),
    }
}

fn check_name(name: &str, options: &AccountCommandOptions) -> Result<(), CliError> {
    if valid_nick(name, options.nicklen) {
        Ok(())
    } else {
        Err(CliError::BadName(name.to_string(), options.nicklen))
    }
}

fn open(dir: &Path, options: &AccountCommandOptions) -> Result<OfflineStore, CliError> {
    Ok(open_all(dir, options.store.clone())?)
}

fn existing(store: &OfflineStore, name: &str) -> Result<Account, CliError> {
    store
        .account(name)
        .cloned()
        .ok_or_else(|| CliError::NoSuchAccount(name.to_string()))
}

/// Flushes and closes the store; a failed account write is an error.
fn finish(store: OfflineStore) -> Result<(), CliError> {
    for done in store.close()? {
        done.result?;
    }
    Ok(())
}

fn new_password(
    stdin: &mut dyn PasswordSource,
    options: &AccountCommandOptions,
) -> Result<Password, CliError> {
    let password = stdin.read_password("Password: ")?;
    options.policy.check(password.as_bytes())?;
    if stdin.interactive() {
        let again = stdin.read_password("Again: ")?;
        if again != password {
            return Err(CliError::Mismatch);
        }
    }
    Ok(password)
}

fn credentials(
    password: &Password,
    options: &AccountCommandOptions,
) -> Result<Credentials, HashError> {
    if options.cheap_hashes {
        Credentials::from_password_cheap(password)
    } else {
        Credentials::from_password(password)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) for milliseconds since the Unix epoch.
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = shardline::time::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        auth::password::verify_password,
        store::{open_all, StoreOptions},
    };

    fn opts() -> AccountCommandOptions {
        AccountCommandOptions {
            cheap_hashes: true,
            ..AccountCommandOptions::default()
        }
    }

    fn run(dir: &Path, args: &[&str], stdin: &str) -> Result<String, CliError> {
        run_account_command_with(dir, args, &mut stdin.as_bytes(), &opts())
    }

    fn stored(dir: &Path, name: &str) -> Option<Account> {
        let store = open_all(dir, StoreOptions::default()).unwrap();
        let a = store.account(name).cloned();
        store.close().unwrap();
        a
    }

    #[test]
    fn add_passwd_del_list_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(run(dir, &["list"], "").unwrap(), "0 accounts\n");
        assert_eq!(
            run(dir, &["add", "Alice"], "correct horse\n").unwrap(),
            "account Alice added\n"
        );
        assert_eq!(
            run(dir, &["add", "bob"], "battery staple\r\n").unwrap(),
            "account bob added\n"
        );
        let a = stored(dir, "alice").unwrap();
        assert_eq!(a.name, "Alice");
        let creds = Credentials::parse(&a.password_hash);
        assert_eq!(verify_password(b"correct horse", &creds.phc), Ok(true));
        assert!(creds.scram.is_some());
        let b = Credentials::parse(&stored(dir, "bob").unwrap().password_hash);
        assert_eq!(
            verify_password(b"battery staple", &b.phc),
            Ok(true),
            "CR LF stripped"
        );

        let list = run(dir, &["list"], "").unwrap();
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 3, "{list}");
        assert!(lines[0].starts_with("Alice  created 20"), "{list}");
        assert!(
            lines[0].ends_with("certificates 0  login password,scram"),
            "{list}"
        );
        assert!(lines[1].starts_with("bob  created"), "{list}");
        assert_eq!(lines[2], "2 accounts");

        // passwd keeps the rest of the record.
        assert_eq!(
            run(dir, &["passwd", "ALICE"], "new password\n").unwrap(),
            "password of ALICE changed\n"
        );
        let a2 = stored(dir, "alice").unwrap();
        assert_eq!((a2.name.as_str(), a2.created), ("Alice", a.created));
        let creds = Credentials::parse(&a2.password_hash);
        assert_eq!(verify_password(b"new password", &creds.phc), Ok(true));
        assert_eq!(verify_password(b"correct horse", &creds.phc), Ok(false));

        assert_eq!(
            run(dir, &["del", "alice"], "").unwrap(),
            "account Alice deleted\n"
        );
        assert!(stored(dir, "alice").is_none());
        assert_eq!(
            run(dir, &["list"], "").unwrap().lines().last(),
            Some("1 account")
        );
    }

    #[test]
    fn refusals() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        run(dir, &["add", "alice"], "correct horse\n").unwrap();
        assert!(matches!(
            run(dir, &["add", "ALICE"], "correct horse\n"),
            Err(CliError::Exists(_))
        ));
        assert!(matches!(
            run(dir, &["add", "1bad"], "correct horse\n"),
            Err(CliError::BadName(..))
        ));
        assert!(matches!(
            run(dir, &["add", "carol"], "short\n"),
            Err(CliError::Password(PolicyError::TooShort { .. }))
        ));
        assert!(matches!(
            run(dir, &["add", "carol"], ""),
            Err(CliError::Io(_))
        ));
        assert!(matches!(
            run(dir, &["passwd", "nobody"], "correct horse\n"),
            Err(CliError::NoSuchAccount(_))
        ));
        assert!(matches!(
            run(dir, &["del", "nobody"], ""),
            Err(CliError::NoSuchAccount(_))
        ));
        assert!(matches!(run(dir, &[], ""), Err(CliError::Usage(_))));
        assert!(matches!(run(dir, &["add"], ""), Err(CliError::Usage(_))));
        assert!(matches!(
            run(dir, &["frobnicate", "x"], ""),
            Err(CliError::Usage(_))
        ));
        // Nothing was added by the refusals.
        assert_eq!(
            run(dir, &["list"], "").unwrap().lines().last(),
            Some("1 account")
        );
    }

    #[test]
    fn refused_while_a_server_holds_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let held = open_all(tmp.path(), StoreOptions::default()).unwrap();
        let e = run(tmp.path(), &["list"], "").unwrap_err();
        assert!(e.to_string().contains("in use by process"), "{e}");
        held.close().unwrap();
    }

    #[test]
    fn certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        run(dir, &["add", "alice"], "correct horse\n").unwrap();
        let fp = "AB:".repeat(31) + "AB";
        let hex = "ab".repeat(32);
        assert_eq!(
            run(dir, &["cert", "add", "alice", &fp], "").unwrap(),
            format!("certificate {hex} added to alice\n")
        );
        assert!(run(dir, &["cert", "add", "alice", &hex], "")
            .unwrap()
            .contains("already has"));
        assert_eq!(
            stored(dir, "alice").unwrap().cert_fingerprints,
            vec![hex.clone()]
        );
        assert!(run(dir, &["list"], "")
            .unwrap()
            .contains("certificates 1  login password,scram,certificate"));
        assert!(matches!(
            run(dir, &["cert", "add", "alice", "nothex"], ""),
            Err(CliError::BadFingerprint(_))
        ));
        assert_eq!(
            run(dir, &["cert", "del", "alice", &hex], "").unwrap(),
            format!("certificate {hex} removed from alice\n")
        );
        assert!(stored(dir, "alice").unwrap().cert_fingerprints.is_empty());
        assert!(run(dir, &["cert", "del", "alice", &hex], "")
            .unwrap()
            .contains("has no"));
    }

    /// A source that says a person types, with scripted lines.
    struct Typed(Vec<&'static str>);

    impl PasswordSource for Typed {
        fn read_password(&mut self, _prompt: &str) -> io::Result<Password> {
            Ok(Password::from(self.0.remove(0)))
        }
        fn interactive(&self) -> bool {
            true
        }
    }

    #[test]
    fn interactive_passwords_are_asked_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let e = run_account_command_with(
            dir,
            &["add", "alice"],
            &mut Typed(vec!["correct horse", "correct hose"]),
            &opts(),
        );
        assert!(matches!(e, Err(CliError::Mismatch)));
        run_account_command_with(
            dir,
            &["add", "alice"],
            &mut Typed(vec!["correct horse", "correct horse"]),
            &opts(),
        )
        .unwrap();
    }

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_time(1_798_761_599_999), "2026-12-31T23:59:59Z");
    }
}
