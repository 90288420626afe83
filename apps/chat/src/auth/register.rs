//! In-band account registration: IRCv3 `draft/account-registration`
//! (`REGISTER <account> {<email> | "*"} <password>`), the checks that need no
//! store, and the replies.
//!
//! The chat calls [`validate`] with the command's parameters and what it knows
//! of the client ([`RegisterContext`]). A [`Registration`] that passes still
//! needs the account's owner shard to say the name is free (else
//! [`Fail::account_exists`]); then [`Registration::account_record`] — argon2
//! and PBKDF2, about 50 ms plus 0.2 s, so on a
//! helper thread — makes the record for `Store::put_account`, and once its
//! ticket completes the chat sends [`success`] and logs the client in (900,
//! and [`super::sasl::Sasl::set_account`]) "as if it used SASL", as the spec
//! says. A failed ticket gets [`Fail::temporarily_unavailable`].
//!
//! # Replies (standard replies, `FAIL REGISTER <code> <account> :<message>`)
//!
//! | code | when |
//! |---|---|
//! | `TEMPORARILY_UNAVAILABLE` | registration is closed by configuration (the cap is then not advertised), or the store failed |
//! | `ALREADY_AUTHENTICATED` | the client is logged in |
//! | `COMPLETE_CONNECTION_REQUIRED` | before connection registration, when `before-connect` is off (no account parameter) |
//! | `NEED_NICK` | no nick yet (account `*`) |
//! | `ACCOUNT_NAME_MUST_BE_NICK` | an account name other than the nick, when `custom-account-name` is off |
//! | `BAD_ACCOUNT_NAME` | not a valid nick ([`crate::casemap::valid_nick`], the `nicklen` limit) |
//! | `INVALID_EMAIL` | an email that is not `local@domain`, or none when `email-required` |
//! | `WEAK_PASSWORD` | shorter than the policy's minimum |
//! | `UNACCEPTABLE_PASSWORD` | longer than the maximum, or NUL/CR/LF |
//! | `ACCOUNT_EXISTS` | the name is registered (from the owner shard) |
//!
//! Too few parameters is [`Refusal::NeedMoreParams`]: the chat answers 461 as
//! for any command. `VERIFY`, `VERIFICATION_REQUIRED` and
//! `UNACCEPTABLE_EMAIL` are not used: no email is sent or stored (the store's
//! account record has no email field), so an email given is checked for form
//! and dropped.

use super::{
    password::{HashError, Password, PasswordPolicy},
    record::{new_account, Credentials},
};
use crate::{
    casemap::{casefold, valid_nick},
    message::is_middle,
    reply::write_line,
    store::Account,
};

/// The capability's name.
pub const CAP: &str = "draft/account-registration";

/// How registration is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterConfig {
    /// Whether clients may register at all.
    pub open: bool,
    /// Whether `REGISTER` is accepted before connection registration.
    pub before_connect: bool,
    /// Whether the account name may differ from the nick.
    pub custom_account_name: bool,
    /// Whether an email address is required.
    pub email_required: bool,
    /// What a password must be.
    pub policy: PasswordPolicy,
}

impl Default for RegisterConfig {
    /// Closed; when opened: before-connect, account name = nick, no email.
    fn default() -> Self {
        RegisterConfig {
            open: false,
            before_connect: true,
            custom_account_name: false,
            email_required: false,
            policy: PasswordPolicy::default(),
        }
    }
}

/// The capability's value (`before-connect,custom-account-name,email-required`,
/// the keys that apply, possibly none: `Some("")` means advertise the cap
/// without a value), or `None` when registration is closed: then the cap is
/// not advertised at all.
pub fn cap_value(config: &RegisterConfig) -> Option<String> {
    if !config.open {
        return None;
    }
    let keys: Vec<&str> = [
        (config.before_connect, "before-connect"),
        (config.custom_account_name, "custom-account-name"),
        (config.email_required, "email-required"),
    ]
    .into_iter()
    .filter_map(|(on, key)| on.then_some(key))
    .collect();
    Some(keys.join(","))
}

/// What the chat knows of the client sending `REGISTER`.
#[derive(Debug, Clone, Copy)]
pub struct RegisterContext<'a> {
    /// Its nick, if it sent one.
    pub nick: Option<&'a str>,
    /// Whether connection registration is complete (it got 001).
    pub connected: bool,
    /// The account it is logged in as, if any.
    pub account: Option<&'a str>,
    /// `[limits] nicklen`: account names are nicks.
    pub nicklen: usize,
}

/// A `FAIL REGISTER` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum FailCode {
    AccountExists,
    BadAccountName,
    AccountNameMustBeNick,
    NeedNick,
    AlreadyAuthenticated,
    WeakPassword,
    UnacceptablePassword,
    InvalidEmail,
    CompleteConnectionRequired,
    TemporarilyUnavailable,
}

impl FailCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            FailCode::AccountExists => "ACCOUNT_EXISTS",
            FailCode::BadAccountName => "BAD_ACCOUNT_NAME",
            FailCode::AccountNameMustBeNick => "ACCOUNT_NAME_MUST_BE_NICK",
            FailCode::NeedNick => "NEED_NICK",
            FailCode::AlreadyAuthenticated => "ALREADY_AUTHENTICATED",
            FailCode::WeakPassword => "WEAK_PASSWORD",
            FailCode::UnacceptablePassword => "UNACCEPTABLE_PASSWORD",
            FailCode::InvalidEmail => "INVALID_EMAIL",
            FailCode::CompleteConnectionRequired => "COMPLETE_CONNECTION_REQUIRED",
            FailCode::TemporarilyUnavailable => "TEMPORARILY_UNAVAILABLE",
        }
    }
}

/// A `FAIL REGISTER` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    /// The code.
    pub code: FailCode,
    /// The account parameter (`*` where none applies); `None` for
    /// `COMPLETE_CONNECTION_REQUIRED`, which has none.
    pub account: Option<String>,
    /// The human-readable description.
    pub message: String,
}

/// An account name fit to be a middle parameter, else `*`.
fn shown(name: &str) -> String {
    if is_middle(name) && name.len() <= 64 {
        name.to_string()
    } else {
        "*".to_string()
    }
}

impl Fail {
    fn new(code: FailCode, account: &str, message: impl Into<String>) -> Fail {
        Fail {
            code,
            account: Some(shown(account)),
            message: message.into(),
        }
    }

    /// `ACCOUNT_EXISTS`: the owner shard found the name taken.
    pub fn account_exists(account: &str) -> Fail {
        Fail::new(FailCode::AccountExists, account, "Account already exists")
    }

    /// `TEMPORARILY_UNAVAILABLE`: the store could not write the account.
    pub fn temporarily_unavailable(account: &str) -> Fail {
        Fail::new(
            FailCode::TemporarilyUnavailable,
            account,
            "Could not register the account now; try again later",
        )
    }

    /// Appends `:server FAIL REGISTER <code> [<account>] :<message>`.
    pub fn write(&self, out: &mut Vec<u8>, server: &str) {
        let context: Vec<&str> = self.account.iter().map(String::as_str).collect();
        crate::reply::write_standard(
            out,
            server,
            crate::reply::Standard::Fail,
            "REGISTER",
            self.code.as_str(),
            &context,
            &self.message,
        );
    }

    /// [`Fail::write`] into a new buffer.
    pub fn render(&self, server: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        self.write(&mut out, server);
        out
    }
}

/// `:server REGISTER SUCCESS <account> :Account successfully registered`.
pub fn success(server: &str, account: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    write_line(
        &mut out,
        server,
        "REGISTER",
        &["SUCCESS", account, "Account successfully registered"],
        true,
    );
    out
}

/// Why `REGISTER` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Fewer than three parameters: 461 ERR_NEEDMOREPARAMS.
    NeedMoreParams,
    /// A `FAIL REGISTER` reply.
    Fail(Fail),
}

/// A registration that passed [`validate`]. `Debug` hides the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The account name (the nick for `*`).
    pub account: String,
    /// The email given, if any (checked for form; not stored).
    pub email: Option<String>,
    /// The password.
    pub password: Password,
}

impl Registration {
    /// The account's credentials: argon2 hash and SCRAM data. Blocks (see
    /// the module doc): on a helper thread.
    pub fn credentials(&self) -> Result<Credentials, HashError> {
        Credentials::from_password(&self.password)
    }

    /// The record to store, created at `now_ms`. Blocks like
    /// [`Registration::credentials`].
    pub fn account_record(&self, now_ms: u64) -> Result<Account, HashError> {
        Ok(new_account(&self.account, &self.credentials()?, now_ms))
    }
}

/// Whether `email` looks like `local@domain`: one `@`, both sides non-empty,
/// no whitespace or control characters, at most 254 bytes. Deliberately loose:
/// refusing a valid address is the error the spec warns about.
pub fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Checks `REGISTER <account> <email> <password>` (`params` as parsed, the
/// command excluded) for the client `ctx` under `config`.
pub fn validate(
    params: &[&str],
    ctx: &RegisterContext<'_>,
    config: &RegisterConfig,
) -> Result<Registration, Refusal> {
    let [account, email, password, ..] = params else {
        return Err(Refusal::NeedMoreParams);
    };
    let fail =
        |code, account: &str, message: &str| Err(Refusal::Fail(Fail::new(code, account, message)));
    let named = if *account == "*" {
        ctx.nick.unwrap_or("*")
    } else {
        account
    };
    if !config.open {
        return fail(
            FailCode::TemporarilyUnavailable,
            named,
            "Account registration is disabled on this server",
        );
    }
    if let Some(current) = ctx.account {
        return fail(
            FailCode::AlreadyAuthenticated,
            current,
            "You are already logged in to an account",
        );
    }
    if !ctx.connected && !config.before_connect {
        return Err(Refusal::Fail(Fail {
            code: FailCode::CompleteConnectionRequired,
            account: None,
            message: "Register after connecting".into(),
        }));
    }
    let Some(nick) = ctx.nick else {
        return fail(FailCode::NeedNick, "*", "Send NICK before REGISTER");
    };
    let name = if *account == "*" { nick } else { account };
    if !config.custom_account_name && casefold(name) != casefold(nick) {
        return fail(
            FailCode::AccountNameMustBeNick,
            name,
            "The account name must be your current nick",
        );
    }
    if !valid_nick(name, ctx.nicklen) {
        return fail(
            FailCode::BadAccountName,
            name,
            &format!(
                "Account names follow the nick rules: a letter or one of []\\`_^{{|}} first, then letters, digits, those or -, at most {} bytes",
                ctx.nicklen
            ),
        );
    }
    let email = match *email {
        "*" if config.email_required => {
            return fail(FailCode::InvalidEmail, name, "An email address is required")
        }
        "*" => None,
        e if plausible_email(e) => Some(e.to_string()),
        _ => return fail(FailCode::InvalidEmail, name, "Invalid email address"),
    };
    if let Err(e) = config.policy.check(password.as_bytes()) {
        let code = if e.is_weak() {
            FailCode::WeakPassword
        } else {
            FailCode::UnacceptablePassword
        };
        return fail(code, name, &format!("Password not accepted: {e}"));
    }
    Ok(Registration {
        account: name.to_string(),
        email,
        password: Password::from(*password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::verify_password;

    fn open() -> RegisterConfig {
        RegisterConfig {
            open: true,
            ..RegisterConfig::default()
        }
    }

    fn ctx(nick: Option<&str>) -> RegisterContext<'_> {
        RegisterContext {
            nick,
            connected: true,
            account: None,
            nicklen: 30,
        }
    }

    fn code(r: Result<Registration, Refusal>) -> (FailCode, Option<String>) {
        match r {
            Err(Refusal::Fail(f)) => (f.code, f.account),
            other => panic!("expected a FAIL, got {other:?}"),
        }
    }

    #[test]
    fn star_means_the_current_nick() {
        let r = validate(&["*", "*", "hunter2hunter2"], &ctx(Some("Tester")), &open()).unwrap();
        assert_eq!(r.account, "Tester");
        assert_eq!(r.email, None);
        assert_eq!(r.password.as_bytes(), b"hunter2hunter2");
        // The same name spelled otherwise is the nick too.
        let r = validate(
            &["tester", "*", "hunter2hunter2"],
            &ctx(Some("Tester")),
            &open(),
        )
        .unwrap();
        assert_eq!(r.account, "tester");
    }

    #[test]
    fn too_few_parameters() {
        assert_eq!(
            validate(&["*", "*"], &ctx(Some("t")), &open()),
            Err(Refusal::NeedMoreParams)
        );
        assert_eq!(
            validate(&[], &ctx(Some("t")), &open()),
            Err(Refusal::NeedMoreParams)
        );
    }

    #[test]
    fn closed_registration() {
        let r = validate(
            &["*", "*", "hunter2hunter2"],
            &ctx(Some("tester")),
            &RegisterConfig::default(),
        );
        assert_eq!(
            code(r),
            (FailCode::TemporarilyUnavailable, Some("tester".into()))
        );
        assert_eq!(cap_value(&RegisterConfig::default()), None);
    }

    #[test]
    fn already_authenticated() {
        let mut c = ctx(Some("tester"));
        c.account = Some("Tester");
        let r = validate(&["*", "*", "hunter2hunter2"], &c, &open());
        assert_eq!(
            code(r),
            (FailCode::AlreadyAuthenticated, Some("Tester".into()))
        );
    }

    #[test]
    fn before_connect_and_need_nick() {
        let mut c = ctx(None);
        c.connected = false;
        // before-connect: allowed, but there is no nick yet.
        let r = validate(&["*", "*", "hunter2hunter2"], &c, &open());
        assert_eq!(code(r), (FailCode::NeedNick, Some("*".into())));
        // Without before-connect: wait for the welcome.
        let cfg = RegisterConfig {
            before_connect: false,
            ..open()
        };
        let f = match validate(&["*", "*", "hunter2hunter2"], &c, &cfg) {
            Err(Refusal::Fail(f)) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(f.code, FailCode::CompleteConnectionRequired);
        assert_eq!(
            String::from_utf8(f.render("srv")).unwrap(),
            ":srv FAIL REGISTER COMPLETE_CONNECTION_REQUIRED :Register after connecting\r\n"
        );
        // Once connected it goes through.
        assert!(validate(&["*", "*", "hunter2hunter2"], &ctx(Some("t")), &cfg).is_ok());
    }

    #[test]
    fn custom_account_names() {
        let r = validate(
            &["other", "*", "hunter2hunter2"],
            &ctx(Some("tester")),
            &open(),
        );
        assert_eq!(
            code(r),
            (FailCode::AccountNameMustBeNick, Some("other".into()))
        );
        let cfg = RegisterConfig {
            custom_account_name: true,
            ..open()
        };
        let r = validate(
            &["other", "*", "hunter2hunter2"],
            &ctx(Some("tester")),
            &cfg,
        )
        .unwrap();
        assert_eq!(r.account, "other");
    }

    #[test]
    fn bad_account_names() {
        let cfg = RegisterConfig {
            custom_account_name: true,
            ..open()
        };
        for bad in ["1abc", "#chan", "a.b", "a\u{e9}", &"a".repeat(31)] {
            let r = validate(&[bad, "*", "hunter2hunter2"], &ctx(Some("tester")), &cfg);
            assert_eq!(code(r).0, FailCode::BadAccountName, "{bad}");
        }
        // A name unfit as a middle parameter is shown as `*`.
        let r = validate(&[":x", "*", "hunter2hunter2"], &ctx(Some("tester")), &cfg);
        assert_eq!(code(r), (FailCode::BadAccountName, Some("*".into())));
    }

    #[test]
    fn emails() {
        let r = validate(
            &["*", "me@example.org", "hunter2hunter2"],
            &ctx(Some("t")),
            &open(),
        )
        .unwrap();
        assert_eq!(r.email.as_deref(), Some("me@example.org"));
        for bad in ["nope", "@example.org", "me@", "me@.org", "a b@c.d"] {
            let r = validate(&["*", bad, "hunter2hunter2"], &ctx(Some("t")), &open());
            assert_eq!(code(r).0, FailCode::InvalidEmail, "{bad}");
        }
        let cfg = RegisterConfig {
            email_required: true,
            ..open()
        };
        let r = validate(&["*", "*", "hunter2hunter2"], &ctx(Some("t")), &cfg);
        assert_eq!(code(r).0, FailCode::InvalidEmail);
        assert!(plausible_email("\"quoted@local\"@example.org"));
    }

    #[test]
    fn passwords() {
        let r = validate(&["*", "*", "short"], &ctx(Some("t")), &open());
        assert_eq!(code(r).0, FailCode::WeakPassword);
        let long = "x".repeat(301);
        let r = validate(&["*", "*", &long], &ctx(Some("t")), &open());
        assert_eq!(code(r).0, FailCode::UnacceptablePassword);
        let r = validate(&["*", "*", "abc\0defghij"], &ctx(Some("t")), &open());
        assert_eq!(code(r).0, FailCode::UnacceptablePassword);
    }

    #[test]
    fn account_exists_and_replies() {
        assert_eq!(
            String::from_utf8(Fail::account_exists("tester").render("srv.test")).unwrap(),
            ":srv.test FAIL REGISTER ACCOUNT_EXISTS tester :Account already exists\r\n"
        );
        assert_eq!(
            String::from_utf8(success("srv.test", "tester")).unwrap(),
            ":srv.test REGISTER SUCCESS tester :Account successfully registered\r\n"
        );
        let f = Fail::temporarily_unavailable("tester");
        assert_eq!(f.code.as_str(), "TEMPORARILY_UNAVAILABLE");
    }

    #[test]
    fn cap_values() {
        assert_eq!(cap_value(&open()).as_deref(), Some("before-connect"));
        let all = RegisterConfig {
            custom_account_name: true,
            email_required: true,
            ..open()
        };
        assert_eq!(
            cap_value(&all).as_deref(),
            Some("before-connect,custom-account-name,email-required")
        );
        let none = RegisterConfig {
            before_connect: false,
            ..open()
        };
        assert_eq!(cap_value(&none).as_deref(), Some(""));
    }

    #[test]
    fn registration_makes_a_record() {
        let r = validate(&["*", "*", "hunter2hunter2"], &ctx(Some("Tester")), &open()).unwrap();
        // The production parameters, once: the record a REGISTER stores.
        let a = r.account_record(1234).unwrap();
        assert_eq!(a.name, "Tester");
        assert_eq!(a.created, 1234);
        assert!(a.cert_fingerprints.is_empty());
        let creds = Credentials::parse(&a.password_hash);
        assert!(creds.phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(creds.scram.as_ref().map(|s| s.iterations()), Some(600_000));
        assert_eq!(verify_password(b"hunter2hunter2", &creds.phc), Ok(true));
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
