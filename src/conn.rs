//! libpq-compatible connection parameters, completed the way libpq completes them: a conninfo
//! string (URI or key=value), then a service (`service=` or PGSERVICE, from pg_service.conf), then
//! the PG* environment, then libpq's defaults. A multi-host list becomes one server per host, each
//! with its own `.pgpass` password (`targets`); `session::connect_first` chooses among them as
//! target_session_attrs and load_balance_hosts say. PostgreSQL 18's libpq is the reference a test
//! compares against (tests/integration/libpq_oracle.rs).
//!
//! A setting libpq would act on and steep cannot is refused with its name and where it came from,
//! never ignored: an ignored setting can mean talking to another server than the user's other tools.

mod files;
mod session;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

pub use session::{connect_first, try_next_host, HostFailure, TargetSession};

/// How steep treats a libpq keyword.
#[derive(Clone, Copy)]
enum Support {
    /// As libpq does (values are checked by `check_value`).
    Yes,
    /// Used only for GSSAPI, which steep lacks, as does a libpq built without it: accepted, unused.
    GssOnly,
    /// steep cannot do what libpq would: a non-empty value is refused, for this reason.
    No(&'static str),
}

/// Every keyword of PostgreSQL 18's libpq, with the environment variable it falls back to.
const KEYWORDS: &[(&str, Option<&str>, Support)] = &[
    ("service", Some("PGSERVICE"), Support::Yes),
    ("user", Some("PGUSER"), Support::Yes),
    ("password", Some("PGPASSWORD"), Support::Yes),
    ("passfile", Some("PGPASSFILE"), Support::Yes),
    ("channel_binding", Some("PGCHANNELBINDING"), Support::Yes),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT"), Support::Yes),
    ("dbname", Some("PGDATABASE"), Support::Yes),
    ("host", Some("PGHOST"), Support::Yes),
    ("hostaddr", Some("PGHOSTADDR"), Support::Yes),
    ("port", Some("PGPORT"), Support::Yes),
    ("client_encoding", Some("PGCLIENTENCODING"), Support::Yes),
    ("options", Some("PGOPTIONS"), Support::Yes),
    ("application_name", Some("PGAPPNAME"), Support::Yes),
    ("fallback_application_name", None, Support::Yes),
    ("keepalives", None, Support::Yes),
    ("keepalives_idle", None, Support::Yes),
    ("keepalives_interval", None, Support::Yes),
    ("keepalives_count", None, Support::Yes),
    ("tcp_user_timeout", None, Support::Yes),
    ("sslmode", Some("PGSSLMODE"), Support::Yes),
    ("sslnegotiation", Some("PGSSLNEGOTIATION"), Support::Yes),
    // libpq asks OpenSSL for compression, which OpenSSL 1.1 and later no longer offer.
    ("sslcompression", Some("PGSSLCOMPRESSION"), Support::Yes),
    ("sslcert", Some("PGSSLCERT"), Support::Yes),
    ("sslkey", Some("PGSSLKEY"), Support::Yes),
    ("sslcertmode", Some("PGSSLCERTMODE"), Support::Yes),
    (
        "sslpassword",
        None,
        Support::No("steep reads only unencrypted client keys: decrypt it (openssl pkey)"),
    ),
    ("sslrootcert", Some("PGSSLROOTCERT"), Support::Yes),
    (
        "sslcrl",
        Some("PGSSLCRL"),
        Support::No("steep does not check certificate revocation lists"),
    ),
    (
        "sslcrldir",
        Some("PGSSLCRLDIR"),
        Support::No("steep does not check certificate revocation lists"),
    ),
    ("sslsni", Some("PGSSLSNI"), Support::Yes),
    (
        "requirepeer",
        Some("PGREQUIREPEER"),
        Support::No("steep cannot check the OS user of the server process"),
    ),
    (
        "require_auth",
        Some("PGREQUIREAUTH"),
        Support::No("steep cannot restrict the authentication methods it accepts"),
    ),
    (
        "min_protocol_version",
        Some("PGMINPROTOCOLVERSION"),
        Support::Yes,
    ),
    (
        "max_protocol_version",
        Some("PGMAXPROTOCOLVERSION"),
        Support::Yes,
    ),
    (
        "ssl_min_protocol_version",
        Some("PGSSLMINPROTOCOLVERSION"),
        Support::Yes,
    ),
    (
        "ssl_max_protocol_version",
        Some("PGSSLMAXPROTOCOLVERSION"),
        Support::Yes,
    ),
    ("gssencmode", Some("PGGSSENCMODE"), Support::Yes),
    ("krbsrvname", Some("PGKRBSRVNAME"), Support::GssOnly),
    ("gsslib", Some("PGGSSLIB"), Support::GssOnly),
    ("gssdelegation", Some("PGGSSDELEGATION"), Support::GssOnly),
    ("replication", None, Support::Yes),
    (
        "target_session_attrs",
        Some("PGTARGETSESSIONATTRS"),
        Support::Yes,
    ),
    (
        "load_balance_hosts",
        Some("PGLOADBALANCEHOSTS"),
        Support::Yes,
    ),
    (
        "scram_client_key",
        None,
        Support::No("steep authenticates with passwords, not SCRAM keys"),
    ),
    (
        "scram_server_key",
        None,
        Support::No("steep authenticates with passwords, not SCRAM keys"),
    ),
    (
        "oauth_issuer",
        None,
        Support::No("steep has no OAuth client"),
    ),
    (
        "oauth_client_id",
        None,
        Support::No("steep has no OAuth client"),
    ),
    (
        "oauth_client_secret",
        None,
        Support::No("steep has no OAuth client"),
    ),
    (
        "oauth_scope",
        None,
        Support::No("steep has no OAuth client"),
    ),
    (
        "sslkeylogfile",
        None,
        Support::No("steep does not write TLS key logs"),
    ),
];

/// Keywords whose values are secrets: masked in displays, never quoted in errors.
const SECRETS: &[&str] = &[
    "password",
    "sslpassword",
    "oauth_client_secret",
    "scram_client_key",
    "scram_server_key",
];

/// Environment variables libpq sends as session settings at startup, with the setting each sets.
const ENV_SETTINGS: &[(&str, &str)] = &[
    ("PGDATESTYLE", "datestyle"),
    ("PGTZ", "timezone"),
    ("PGGEQO", "geqo"),
];

/// Environment variables that choose *which* server (or database, or role) to talk to. When none
/// is set and no connection string was given, the CLI may fall back to the local sandbox; when
/// one is set, libpq would go where it says, and so must steep.
/// A parse error must not show a piece of a password: a malformed string (an unquoted password
/// with a space, a URI password with an unescaped `/` or `@`) makes the parser take a piece of it
/// for a keyword, a host or a port and name it. When the message holds any three characters in a
/// row that follow a password in the string, it is replaced by one that names only the fix.
fn withhold_secret_fragments(s: &str, e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    let lower = s.to_ascii_lowercase();
    let mut secret_tails: Vec<&str> = Vec::new();
    if let Some(i) = lower.find("password") {
        secret_tails.push(&s[i + "password".len()..]);
    }
    if let Some(rest) = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
    {
        // A password is there only with user info (`user:password@`).
        if let (Some(colon), Some(at)) = (rest.find(':'), rest.rfind('@')) {
            if colon < at {
                secret_tails.push(&rest[colon + 1..]);
            }
        }
    }
    let leaks = secret_tails.iter().any(|tail| {
        let chars: Vec<char> = tail
            .trim_start_matches(|c: char| c == '=' || c.is_whitespace() || c == '\'')
            .chars()
            .take(64)
            .collect();
        chars
            .windows(3)
            .any(|w| text.contains(&w.iter().collect::<String>()))
    });
    if leaks {
        anyhow::anyhow!(
            "the connection string is malformed, and it holds a password, so the details are not \
             shown: quote values with spaces (password='...'), percent-encode a URI password \
             (%2F for /, %40 for @, %3A for :), or give the password in a passfile"
        )
    } else {
        e
    }
}

pub const TARGET_ENV: &[&str] = &[
    "PGSERVICE",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
];

/// Where libpq looks for the system-wide pg_service.conf when PGSYSCONFDIR is not set. libpq
/// uses the directory it was built with; steep has none, and takes Debian's and Ubuntu's.
pub const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// Where a value came from, for messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// A connection string or the caller.
    Given,
    Env(&'a str),
    Service {
        name: &'a str,
        file: &'a Path,
        line: usize,
    },
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Given => Ok(()),
            Origin::Env(var) => write!(f, " (from {var})"),
            Origin::Service { name, file, line } => write!(
                f,
                " (from service \"{name}\" in {}, line {line})",
                file.display()
            ),
        }
    }
}

impl Origin<'_> {
    /// How to take the value away.
    fn remedy(&self) -> String {
        match self {
            Origin::Given => "remove it from the connection string".into(),
            Origin::Env(var) => format!("unset {var}"),
            Origin::Service { name, file, .. } => {
                format!("remove it from service \"{name}\" in {}", file.display())
            }
        }
    }
}

/// What libpq reads besides the connection string.
pub struct Environment<'a> {
    /// An environment variable, as set (an empty value is a value, as libpq takes it).
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// Name and home directory of the effective OS user (libpq: getpwuid(geteuid())).
    pub os_user: Option<(String, PathBuf)>,
}

impl Environment<'_> {
    /// The home directory libpq uses for ~/.pgpass and ~/.pg_service.conf: $HOME, else the OS
    /// user's.
    fn home(&self) -> Option<PathBuf> {
        (self.var)("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| self.os_user.as_ref().map(|(_, home)| home.clone()))
    }
}

#[cfg(feature = "cli")]
impl Environment<'static> {
    /// This process's environment and effective user: what libpq would read here.
    pub fn of_process() -> Self {
        fn var(k: &str) -> Option<String> {
            std::env::var(k).ok()
        }
        let os_user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| (u.name, u.dir));
        Environment { var: &var, os_user }
    }
}

/// Connection parameters by libpq keyword.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnParams {
    params: BTreeMap<String, String>,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnParams({})", self.redacted())
    }
}

impl ConnParams {
    /// Parse a libpq connection string: `postgresql://...` / `postgres://...` URIs or
    /// `key=value` pairs. Unknown keywords and invalid values are errors (as in libpq).
    pub fn parse(s: &str) -> Result<Self> {
        Self::parse_unchecked(s).map_err(|e| withhold_secret_fragments(s, e))
    }

    fn parse_unchecked(s: &str) -> Result<Self> {
        let t = s.trim();
        let params = if t.starts_with("postgresql://") || t.starts_with("postgres://") {
            parse_uri(t)?
        } else {
            parse_kv(t)?
        };
        let mut out = Self::default();
        for (k, v) in params {
            out.insert(&k, v, Origin::Given)?;
        }
        Ok(out)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// Set a keyword, checked as if it came from a connection string.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> Result<()> {
        self.insert(key, value.into(), Origin::Given)
    }

    pub fn remove(&mut self, key: &str) {
        self.params.remove(key);
    }

    fn insert(&mut self, key: &str, value: String, origin: Origin) -> Result<()> {
        let Some((_, _, support)) = KEYWORDS.iter().find(|(k, _, _)| *k == key) else {
            bail!(
                "invalid connection option \"{key}\"{origin}: not a libpq keyword (see \
                 https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS)"
            );
        };
        check_value(key, &value, *support, origin)?;
        self.params.insert(key.to_string(), value);
        Ok(())
    }

    /// Complete these parameters (from a connection string, or none) as libpq does: a service
    /// (`service=` here, else PGSERVICE) fills what the string left unset, then the PG*
    /// environment, then libpq's defaults (the OS user, a database named after the user,
    /// ~/.pgpass). The service keyword itself is consumed: the result says everything.
    pub fn resolve(mut self, env: &Environment) -> Result<ConnParams> {
        let service = match self.params.remove("service") {
            Some(name) => Some((name, Origin::Given)),
            None => (env.var)("PGSERVICE").map(|name| (name, Origin::Env("PGSERVICE"))),
        };
        if let Some((name, origin)) = &service {
            files::apply_service(&mut self, name, *origin, env)?;
        }
        for (key, var, _) in KEYWORDS {
            let Some(var) = var else { continue };
            if *key == "service" || self.params.contains_key(*key) {
                continue;
            }
            if let Some(v) = (env.var)(var) {
                self.insert(key, v, Origin::Env(var))?;
            }
        }
        // libpq's deprecated PGREQUIRESSL: "1..." means sslmode=require unless sslmode is set.
        if !self.params.contains_key("sslmode")
            && (env.var)("PGREQUIRESSL").is_some_and(|v| v.starts_with('1'))
        {
            self.insert("sslmode", "require".into(), Origin::Env("PGREQUIRESSL"))?;
        }
        // libpq sends these as settings in the startup packet, which the server applies after
        // `options`; appended to `options` they arrive the same way and win the same way.
        let settings: Vec<String> = ENV_SETTINGS
            .iter()
            .filter_map(|(var, guc)| {
                (env.var)(var)
                    .filter(|v| !v.eq_ignore_ascii_case("default"))
                    .map(|v| format!("-c {guc}={}", escape_option(&v)))
            })
            .collect();
        if !settings.is_empty() {
            let options = self.params.entry("options".into()).or_default();
            for s in settings {
                if !options.is_empty() {
                    options.push(' ');
                }
                options.push_str(&s);
            }
        }
        if self.get("user").is_none_or(str::is_empty) {
            let (name, _) = env.os_user.as_ref().ok_or_else(|| {
                anyhow!("no user given and the OS user's name is unknown: give user= or set PGUSER")
            })?;
            self.params.insert("user".into(), name.clone());
        }
        if self.get("dbname").is_none_or(str::is_empty) {
            let user = self.params["user"].clone();
            self.params.insert("dbname".into(), user);
        }
        if self.get("passfile").is_none_or(str::is_empty) {
            if let Some(home) = env.home() {
                self.params.insert(
                    "passfile".into(),
                    home.join(".pgpass").to_string_lossy().into_owned(),
                );
            }
        }
        // libpq: the system CA store with no sslmode given means sslmode=verify-full.
        if !self.params.contains_key("sslmode") && self.get("sslrootcert") == Some("system") {
            self.params.insert("sslmode".into(), "verify-full".into());
        }
        self.check_combinations()?;
        Ok(self)
    }

    /// Rules that involve several keywords (libpq checks them before connecting, too).
    fn check_combinations(&self) -> Result<()> {
        let hosts = self.list("host");
        let addrs = self.list("hostaddr");
        let n = if addrs.is_empty() {
            hosts.len().max(1)
        } else {
            addrs.len()
        };
        if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
            bail!(
                "could not match {} host names to {} hostaddr values: give one hostaddr per host",
                hosts.len(),
                addrs.len()
            );
        }
        let ports = self.list("port");
        if ports.len() > 1 && ports.len() != n {
            bail!(
                "could not match {} port numbers to {n} hosts: give one port for all hosts or one \
                 per host",
                ports.len()
            );
        }
        let version = |key| {
            self.get(key)
                .filter(|v| !v.is_empty())
                .map(|v| TLS_VERSIONS.iter().position(|t| t.eq_ignore_ascii_case(v)))
        };
        if let (Some(min), Some(max)) = (
            version("ssl_min_protocol_version"),
            version("ssl_max_protocol_version"),
        ) {
            if min > max {
                bail!(
                    "invalid SSL protocol version range: ssl_min_protocol_version is above \
                     ssl_max_protocol_version"
                );
            }
        }
        if self.get("sslnegotiation") == Some("direct")
            && !matches!(
                self.get("sslmode"),
                Some("require" | "verify-ca" | "verify-full")
            )
        {
            bail!(
                "weak sslmode \"{}\" may not be used with sslnegotiation=direct: use require, \
                 verify-ca or verify-full",
                self.get("sslmode").unwrap_or("prefer")
            );
        }
        Ok(())
    }

    /// A comma-separated keyword as libpq splits it (no value or an empty one: no elements).
    fn list(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(v) if !v.is_empty() => v.split(',').map(str::to_string).collect(),
            _ => Vec::new(),
        }
    }

    /// The servers libpq would try, in order: one set of parameters per host, with host, hostaddr
    /// and port pinned to that one and, when no password was given, that host's password from the
    /// password file. The choice among them is made: target_session_attrs and load_balance_hosts
    /// are left out.
    pub fn targets(&self) -> Result<Vec<ConnParams>> {
        self.check_combinations()?;
        let hosts = self.list("host");
        let addrs = self.list("hostaddr");
        let ports = self.list("port");
        let n = if addrs.is_empty() {
            hosts.len().max(1)
        } else {
            addrs.len()
        };
        let passfile = self
            .get("password")
            .is_none_or(str::is_empty)
            .then(|| self.get("passfile").filter(|f| !f.is_empty()))
            .flatten()
            .and_then(|f| files::PasswordFile::load(Path::new(f)));
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let addr = addrs.get(i).cloned().unwrap_or_default();
            let mut host = hosts.get(i).cloned().unwrap_or_default();
            if host.is_empty() && addr.is_empty() {
                host = default_socket_dir().to_string();
            }
            let port = match ports.len() {
                0 => "",
                1 => ports[0].as_str(),
                _ => ports[i].as_str(),
            };
            let port = match port.trim() {
                "" => 5432,
                p => p.parse::<u16>().expect("ports are checked on insert"),
            };
            let mut t = self.clone();
            t.params.remove("target_session_attrs");
            t.params.remove("load_balance_hosts");
            for (key, value) in [("host", &host), ("hostaddr", &addr)] {
                if value.is_empty() {
                    t.params.remove(key);
                } else {
                    t.params.insert(key.into(), value.clone());
                }
            }
            t.params.insert("port".into(), port.to_string());
            if let Some(pf) = &passfile {
                let pwhost = if host.is_empty() { &addr } else { &host };
                match pf.lookup(
                    pwhost,
                    &port.to_string(),
                    self.get("dbname").unwrap_or(""),
                    self.get("user").unwrap_or(""),
                ) {
                    Some(pw) => t.params.insert("password".into(), pw),
                    None => t.params.remove("password"),
                };
            }
            out.push(t);
        }
        Ok(out)
    }

    /// A display form safe for logs and output: secrets are masked.
    pub fn redacted(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| {
                if SECRETS.contains(&k.as_str()) {
                    format!("{k}=********")
                } else {
                    format!("{k}={}", quote_kv(v))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A key=value string libpq and the `postgres` crate accept (password included: do not log).
    pub fn to_conninfo(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={}", quote_kv(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Host and port for messages, e.g. "127.0.0.1:5432", "/var/run/postgresql:5432" or, for
    /// several hosts, "a:5432,b:5433".
    pub fn endpoint(&self) -> String {
        let hosts = self.list("host");
        let addrs = self.list("hostaddr");
        let ports = self.list("port");
        let n = hosts.len().max(addrs.len()).max(1);
        let socket_dir = default_socket_dir();
        (0..n)
            .map(|i| {
                let host = [hosts.get(i), addrs.get(i)]
                    .into_iter()
                    .flatten()
                    .find(|h| !h.is_empty())
                    .map(String::as_str)
                    .unwrap_or(socket_dir);
                let port = match ports.len() {
                    0 => "5432",
                    1 => ports[0].as_str(),
                    _ => ports.get(i).map_or("5432", String::as_str),
                };
                format!("{host}:{}", if port.is_empty() { "5432" } else { port })
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn connect_timeout(&self) -> Result<Option<Duration>> {
        match self.get("connect_timeout") {
            None => Ok(None),
            Some(v) => {
                let secs = libpq_int(v).ok_or_else(|| {
                    anyhow!("invalid connect_timeout \"{v}\": give a whole number of seconds")
                })?;
                // libpq: 0 or negative waits forever; 1 is raised to 2.
                Ok((secs > 0).then(|| Duration::from_secs(secs.max(2) as u64)))
            }
        }
    }

    /// The `postgres` crate's configuration for these parameters (TLS is chosen separately).
    /// With several hosts the crate tries them in order, which serves target_session_attrs any,
    /// read-write and read-only; `connect_first` serves every value and every host's own password.
    pub fn to_config(&self) -> Result<postgres::Config> {
        use postgres::config::{ChannelBinding, LoadBalanceHosts, SslNegotiation};
        let mut cfg = postgres::Config::new();
        let hosts = self.list("host");
        let addrs = self.list("hostaddr");
        if !addrs.is_empty() && addrs.iter().any(String::is_empty) {
            bail!("hostaddr has an empty element: give an address for every host, or none");
        }
        for i in 0..hosts.len().max(addrs.len()).max(1) {
            let host = hosts.get(i).map(String::as_str).unwrap_or("");
            let addr = addrs.get(i).map(String::as_str).unwrap_or("");
            if !addr.is_empty() {
                cfg.hostaddr(addr.parse().expect("addresses are checked on insert"));
            }
            if host.starts_with('/') {
                cfg.host_path(host);
            } else if !host.is_empty() {
                cfg.host(host);
            } else if !addr.is_empty() {
                // The name TLS checks when only an address is given.
                cfg.host(addr);
            } else {
                cfg.host_path(default_socket_dir());
            }
        }
        for p in self.list("port") {
            cfg.port(match p.trim() {
                "" => 5432,
                p => p.parse().expect("ports are checked on insert"),
            });
        }
        if let Some(u) = self.get("user") {
            cfg.user(u);
        }
        if let Some(d) = self.get("dbname") {
            cfg.dbname(d);
        }
        if let Some(p) = self.get("password").filter(|p| !p.is_empty()) {
            cfg.password(p);
        }
        if let Some(o) = self.get("options").filter(|o| !o.is_empty()) {
            cfg.options(o);
        }
        let app = [
            self.get("application_name"),
            self.get("fallback_application_name"),
        ]
        .into_iter()
        .flatten()
        .find(|a| !a.is_empty())
        .unwrap_or("steep");
        cfg.application_name(app);
        if let Some(t) = self.connect_timeout()? {
            cfg.connect_timeout(t);
        }
        let seconds = |key| {
            self.get(key)
                .map(|v| Duration::from_secs(libpq_int(v).expect("checked on insert") as u64))
        };
        if let Some(k) = self.get("keepalives") {
            cfg.keepalives(libpq_int(k) != Some(0));
        }
        if let Some(d) = seconds("keepalives_idle") {
            cfg.keepalives_idle(d);
        }
        if let Some(d) = seconds("keepalives_interval") {
            cfg.keepalives_interval(d);
        }
        if let Some(n) = self.get("keepalives_count") {
            cfg.keepalives_retries(libpq_int(n).expect("checked on insert") as u32);
        }
        if let Some(ms) = self.get("tcp_user_timeout") {
            // libpq's tcp_user_timeout is in milliseconds.
            let ms = libpq_int(ms).expect("checked on insert") as u64;
            cfg.tcp_user_timeout(Duration::from_millis(ms));
        }
        if let Some(c) = self.get("channel_binding") {
            cfg.channel_binding(match c {
                "disable" => ChannelBinding::Disable,
                "require" => ChannelBinding::Require,
                _ => ChannelBinding::Prefer,
            });
        }
        if self.get("sslnegotiation") == Some("direct") {
            cfg.ssl_negotiation(SslNegotiation::Direct);
        }
        if self.get("load_balance_hosts") == Some("random") {
            cfg.load_balance_hosts(LoadBalanceHosts::Random);
        }
        cfg.target_session_attrs(match TargetSession::of(self) {
            TargetSession::Any => postgres::config::TargetSessionAttrs::Any,
            TargetSession::ReadWrite => postgres::config::TargetSessionAttrs::ReadWrite,
            TargetSession::ReadOnly => postgres::config::TargetSessionAttrs::ReadOnly,
            other => bail!(
                "target_session_attrs={} is not available on this connection (the `postgres` \
                 crate alone knows any, read-write and read-only)",
                other.name()
            ),
        });
        Ok(cfg)
    }
}

/// The directory of the Unix socket libpq uses when no host is given: Debian's, else /tmp.
pub fn default_socket_dir() -> &'static str {
    ["/var/run/postgresql", "/tmp"]
        .into_iter()
        .find(|d| Path::new(d).is_dir())
        .unwrap_or("/tmp")
}

/// TLS protocol versions, oldest first, as libpq names them.
const TLS_VERSIONS: &[&str] = &["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

/// An integer as libpq's pqParseIntParam reads one: optional surrounding whitespace, a sign, digits.
fn libpq_int(v: &str) -> Option<i32> {
    v.trim().parse().ok()
}

/// Quote a value for `options` (libpq's rule: a backslash escapes a space or a backslash).
fn escape_option(v: &str) -> String {
    v.replace('\\', "\\\\").replace(' ', "\\ ")
}

/// Refuse a value libpq would refuse, or one steep cannot honour.
fn check_value(key: &str, v: &str, support: Support, origin: Origin) -> Result<()> {
    let invalid = |shown: &str, fix: &str| anyhow!("invalid {key} \"{shown}\"{origin}: {fix}");
    let one_of = |allowed: &[&str]| -> Result<()> {
        if allowed.contains(&v) {
            return Ok(());
        }
        let (last, rest) = allowed.split_last().expect("non-empty");
        Err(invalid(v, &format!("use {} or {last}", rest.join(", "))))
    };
    let unsupported = |why: &str| {
        let shown = if SECRETS.contains(&key) {
            format!("{key} is set")
        } else {
            format!("{key}={v}")
        };
        anyhow!(
            "{shown}{origin} is not supported by steep: {why}; {}",
            origin.remedy()
        )
    };
    match support {
        Support::No(why) if !v.is_empty() => return Err(unsupported(why)),
        Support::No(_) | Support::GssOnly => return Ok(()),
        Support::Yes => {}
    }
    match key {
        "host" if v.split(',').any(|h| h.starts_with('@')) => Err(unsupported(
            "steep cannot reach abstract Unix-domain sockets",
        )),
        "hostaddr" => match v
            .split(',')
            .find(|a| !a.is_empty() && a.parse::<std::net::IpAddr>().is_err())
        {
            Some(a) => Err(invalid(a, "give an IP address (host= takes names)")),
            None => Ok(()),
        },
        "port" => match v
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .find(|p| libpq_int(p).is_none_or(|n| !(1..=65535).contains(&n)))
        {
            Some(p) => Err(invalid(p, "give a number between 1 and 65535")),
            None => Ok(()),
        },
        "connect_timeout" if libpq_int(v).is_none() => {
            Err(invalid(v, "give a whole number of seconds"))
        }
        "keepalives" if libpq_int(v).is_none() => Err(invalid(v, "give 1 (on) or 0 (off)")),
        "keepalives_idle" | "keepalives_interval" | "keepalives_count" | "tcp_user_timeout"
            if libpq_int(v).is_none_or(|n| n < 0) =>
        {
            Err(invalid(v, "give a whole number, 0 or more"))
        }
        "sslmode" => one_of(&[
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ]),
        "channel_binding" => one_of(&["disable", "prefer", "require"]),
        "target_session_attrs" => one_of(&[
            "any",
            "read-write",
            "read-only",
            "primary",
            "standby",
            "prefer-standby",
        ]),
        "load_balance_hosts" => one_of(&["disable", "random"]),
        "sslnegotiation" => one_of(&["postgres", "direct"]),
        "gssencmode" => one_of(&["disable", "prefer", "require"]).and_then(|()| match v {
            "require" => Err(unsupported("steep has no GSSAPI encryption")),
            _ => Ok(()),
        }),
        "sslcertmode" => one_of(&["disable", "allow", "require"]).and_then(|()| match v {
            "require" => Err(unsupported(
                "steep cannot tell whether the server asked for a client certificate",
            )),
            _ => Ok(()),
        }),
        "ssl_min_protocol_version" | "ssl_max_protocol_version"
            if !v.is_empty() && !TLS_VERSIONS.iter().any(|t| t.eq_ignore_ascii_case(v)) =>
        {
            Err(invalid(v, "use TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3"))
        }
        "min_protocol_version" | "max_protocol_version" => one_of(&["3.0", "3.2", "latest"])
            .and_then(|()| match (key, v) {
                ("min_protocol_version", "3.2" | "latest") => {
                    Err(unsupported("steep speaks protocol version 3.0"))
                }
                _ => Ok(()),
            }),
        "client_encoding" => {
            let name = v
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase();
            if v.is_empty() || name == "utf8" || name == "unicode" {
                Ok(())
            } else {
                Err(unsupported("steep always talks UTF-8 to the server"))
            }
        }
        "replication" if !v.is_empty() && !matches!(v, "0" | "false" | "off" | "no") => {
            Err(unsupported("steep does not open replication connections"))
        }
        _ => Ok(()),
    }
}

fn quote_kv(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `key=value key2='quoted \' value'`, as libpq's conninfo_parse.
fn parse_kv(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            bail!(
                "malformed connection string: missing \"=\" after \"{key}\" (use key=value pairs \
                 or a postgresql:// URI)"
            );
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().ok_or_else(|| {
                        anyhow!("malformed connection string: trailing backslash")
                    })?),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                bail!("malformed connection string: unterminated quoted value for \"{key}\"");
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if key.is_empty() {
            bail!("malformed connection string: empty keyword");
        }
        out.push((key, value));
    }
    Ok(out)
}

/// `postgresql://user:pw@host1:5432,host2/db?sslmode=require`, as libpq's conninfo_uri_parse.
fn parse_uri(s: &str) -> Result<Vec<(String, String)>> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .expect("caller checked the prefix");
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (main, None),
    };
    let mut out = Vec::new();
    let hostspec = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, pw) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.push(("user".to_string(), percent_decode(user, "user name")?));
            }
            if let Some(pw) = pw {
                out.push(("password".to_string(), percent_decode(pw, "password")?));
            }
            hosts
        }
        None => authority,
    };
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for spec in hostspec.split(',').filter(|h| !h.is_empty()) {
        let (host, port) = if let Some(inner) = spec.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| anyhow!("malformed connection URI: unterminated [ in host"))?;
            (h.to_string(), after.strip_prefix(':').map(str::to_string))
        } else {
            match spec.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h, "host")?, Some(p.to_string())),
                None => (percent_decode(spec, "host")?, None),
            }
        };
        hosts.push(host);
        ports.push(port.unwrap_or_default());
    }
    if !hosts.is_empty() && hosts.iter().any(|h| !h.is_empty()) {
        out.push(("host".to_string(), hosts.join(",")));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        let ports: Vec<String> = ports
            .into_iter()
            .map(|p| if p.is_empty() { "5432".into() } else { p })
            .collect();
        out.push(("port".to_string(), ports.join(",")));
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.push(("dbname".to_string(), percent_decode(db, "database name")?));
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                anyhow!("malformed connection URI: parameter \"{pair}\" has no \"=\"")
            })?;
            let k = percent_decode(k, "parameter name")?;
            // libpq accepts ssl=true as an alias of sslmode=require.
            if k == "ssl" && v == "true" {
                out.push(("sslmode".into(), "require".into()));
            } else {
                let v = percent_decode(v, &format!("value of {k}"))?;
                out.push((k, v));
            }
        }
    }
    Ok(out)
}

/// Decode %XX escapes. The error names the part (`what`), never its text: it may be a password.
fn percent_decode(s: &str, what: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    anyhow!("malformed connection URI: bad percent-encoding in the {what}")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow!("malformed connection URI: {s:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_errors_never_show_a_piece_of_a_password() {
        for s in [
            "host=h password=Zq9x Kv7w dbname=x",
            "postgresql://u:Zq9x/Kv7w@h/db",
            "postgresql://u:Zq9x?Kv7w@h/db",
        ] {
            let e = format!("{:#}", super::ConnParams::parse(s).unwrap_err());
            assert!(!e.contains("Zq9") && !e.contains("Kv7"), "{s}: {e}");
        }
        // Without a password the details stay.
        for (s, want) in [
            ("hots=x", "hots"),
            ("postgresql://h:notaport/db", "notaport"),
        ] {
            let e = format!("{:#}", super::ConnParams::parse(s).unwrap_err());
            assert!(e.contains(want), "{e}");
        }
    }

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// An environment of these variables and an OS user "osuser" whose home is `home`.
    fn resolve_in(conn: &str, vars: &[(&str, &str)], home: &Path) -> Result<ConnParams> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let var = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let env = Environment {
            var: &var,
            os_user: Some(("osuser".into(), home.to_path_buf())),
        };
        ConnParams::parse(conn)?.resolve(&env)
    }

    fn private_file(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn key_value_with_quotes_and_escapes() {
        let p = ConnParams::parse(r"host=db1 port = 6543 dbname='my \'db\'' user=a\ b").unwrap();
        assert_eq!(p.get("host"), Some("db1"));
        assert_eq!(p.get("port"), Some("6543"));
        assert_eq!(p.get("dbname"), Some("my 'db'"));
        assert_eq!(p.get("user"), Some("a b"));
    }

    #[test]
    fn uri_with_everything() {
        let p = ConnParams::parse(
            "postgresql://al%40ice:p%3Ass@[::1]:6000,h2/sales%20db?sslmode=require&application_name=x",
        )
        .unwrap();
        assert_eq!(p.get("user"), Some("al@ice"));
        assert_eq!(p.get("password"), Some("p:ss"));
        assert_eq!(p.get("host"), Some("::1,h2"));
        assert_eq!(p.get("port"), Some("6000,5432"));
        assert_eq!(p.get("dbname"), Some("sales db"));
        assert_eq!(p.get("sslmode"), Some("require"));
        assert_eq!(p.get("application_name"), Some("x"));
    }

    #[test]
    fn uri_socket_directory_host() {
        let p = ConnParams::parse("postgres://%2Fvar%2Frun%2Fpostgresql:5433/db").unwrap();
        assert_eq!(p.get("host"), Some("/var/run/postgresql"));
        assert_eq!(p.get("port"), Some("5433"));
    }

    #[test]
    fn malformed_strings_and_invalid_values_are_clear_errors() {
        for (conn, want) in [
            ("host", "missing \"=\""),
            ("host='abc", "unterminated"),
            ("hots=abc", "invalid connection option \"hots\""),
            ("postgresql://h/db?x%zz=1", "percent"),
            ("port=abc", "invalid port \"abc\""),
            ("port=1,70000", "invalid port \"70000\""),
            ("hostaddr=db.example", "invalid hostaddr \"db.example\""),
            (
                "sslmode=sometimes",
                "invalid sslmode \"sometimes\": use disable, allow",
            ),
            ("channel_binding=maybe", "invalid channel_binding \"maybe\""),
            (
                "target_session_attrs=bogus",
                "invalid target_session_attrs \"bogus\"",
            ),
            (
                "load_balance_hosts=round-robin",
                "invalid load_balance_hosts",
            ),
            ("connect_timeout=soon", "invalid connect_timeout \"soon\""),
            ("keepalives_idle=-3", "invalid keepalives_idle"),
        ] {
            let e = ConnParams::parse(conn).unwrap_err().to_string();
            assert!(e.contains(want), "{conn}: {e}");
        }
    }

    #[test]
    fn what_steep_cannot_honour_is_refused_with_the_option_and_its_source() {
        let home = tempfile::tempdir().unwrap();
        for (conn, vars, want) in [
            (
                "sslcrl=/etc/crl.pem",
                &[][..],
                "sslcrl=/etc/crl.pem is not supported by steep",
            ),
            (
                "",
                &[("PGREQUIREPEER", "postgres")][..],
                "(from PGREQUIREPEER)",
            ),
            (
                "",
                &[("PGREQUIREPEER", "postgres")][..],
                "unset PGREQUIREPEER",
            ),
            ("gssencmode=require", &[][..], "no GSSAPI"),
            ("", &[("PGCLIENTENCODING", "LATIN1")][..], "UTF-8"),
            ("replication=database", &[][..], "replication connections"),
            ("min_protocol_version=3.2", &[][..], "protocol version 3.0"),
        ] {
            let e = resolve_in(conn, vars, home.path()).unwrap_err().to_string();
            assert!(e.contains(want), "{conn} {vars:?}: {e}");
        }
        // A secret is never quoted.
        let e = ConnParams::parse("sslpassword=hunter2")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sslpassword is set") && !e.contains("hunter2"),
            "{e}"
        );
        // Empty means unset, and what only GSSAPI uses is accepted (as libpq without GSSAPI does).
        for ok in [
            "sslcrl=''",
            "gssencmode=prefer krbsrvname=pg",
            "client_encoding=UTF-8",
        ] {
            resolve_in(ok, &[], home.path()).unwrap();
        }
    }

    #[test]
    fn environment_fills_what_is_unset_and_empty_values_count() {
        let home = tempfile::tempdir().unwrap();
        let p = resolve_in(
            "host=given",
            &[
                ("PGHOST", "fromenv"),
                ("PGPORT", "7777"),
                ("PGPASSWORD", "pw"),
            ],
            home.path(),
        )
        .unwrap();
        assert_eq!(p.get("host"), Some("given"));
        assert_eq!(p.get("port"), Some("7777"));
        assert_eq!(p.get("password"), Some("pw"));
        assert!(!p.redacted().contains("pw "));
        assert!(p.redacted().contains("password=********"));
        // libpq's defaults: the OS user, a database named after the user, ~/.pgpass.
        assert_eq!(p.get("user"), Some("osuser"));
        assert_eq!(p.get("dbname"), Some("osuser"));
        let pgpass = home.path().join(".pgpass");
        assert_eq!(p.get("passfile"), Some(pgpass.to_str().unwrap()));
        // An empty variable is a value, as in libpq: an invalid one is an error naming it.
        let e = resolve_in("", &[("PGSSLMODE", "")], home.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid sslmode \"\" (from PGSSLMODE)"), "{e}");
        let e = resolve_in("", &[("PGTARGETSESSIONATTRS", "bogus")], home.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid target_session_attrs \"bogus\" (from PGTARGETSESSIONATTRS)"),
            "{e}"
        );
        // PGREQUIRESSL, and the session settings libpq sends from the environment.
        let p = resolve_in(
            "options='-c work_mem=1MB'",
            &[
                ("PGREQUIRESSL", "1"),
                ("PGTZ", "Europe/Paris"),
                ("PGDATESTYLE", "default"),
            ],
            home.path(),
        )
        .unwrap();
        assert_eq!(p.get("sslmode"), Some("require"));
        assert_eq!(
            p.get("options"),
            Some("-c work_mem=1MB -c timezone=Europe/Paris")
        );
    }

    #[test]
    fn service_files_in_libpq_order_with_the_string_winning() {
        let home = tempfile::tempdir().unwrap();
        let sys = tempfile::tempdir().unwrap();
        let user_file = home.path().join("services.conf");
        std::fs::write(
            &user_file,
            "# mine\n[other]\nhost=nope\n\n  [svc]  \nhost=svc-host\nport=6000\n  dbname=svc db\n\
             [later]\nhost=later\n",
        )
        .unwrap();
        std::fs::write(
            sys.path().join("pg_service.conf"),
            "[svc]\nhost=system\n[sysonly]\nhost=sys-host\nuser=sysuser\n",
        )
        .unwrap();
        let sysdir = sys.path().to_str().unwrap();
        let uf = user_file.to_str().unwrap();
        let vars = [("PGSERVICEFILE", uf), ("PGSYSCONFDIR", sysdir)];

        let p = resolve_in("service=svc port=7000", &vars, home.path()).unwrap();
        assert_eq!(p.get("host"), Some("svc-host"));
        assert_eq!(p.get("port"), Some("7000"));
        assert_eq!(p.get("dbname"), Some("svc db"));
        assert_eq!(p.get("service"), None, "the service is consumed");
        // PGSERVICE; the service's values win over the environment's.
        let mut with_env = vars.to_vec();
        with_env.extend([
            ("PGSERVICE", "svc"),
            ("PGHOST", "envhost"),
            ("PGUSER", "envuser"),
        ]);
        let p = resolve_in("", &with_env, home.path()).unwrap();
        assert_eq!(p.get("host"), Some("svc-host"));
        assert_eq!(p.get("user"), Some("envuser"));
        // Not in the user's file: the system one.
        let p = resolve_in("service=sysonly", &vars, home.path()).unwrap();
        assert_eq!(p.get("host"), Some("sys-host"));
        // ~/.pg_service.conf when PGSERVICEFILE is not set.
        std::fs::write(
            home.path().join(".pg_service.conf"),
            "[svc]\nhost=dotfile\n",
        )
        .unwrap();
        let p = resolve_in("service=svc", &[("PGSYSCONFDIR", sysdir)], home.path()).unwrap();
        assert_eq!(p.get("host"), Some("dotfile"));

        for (conn, extra, want) in [
            (
                "service=nope",
                None,
                "definition of service \"nope\" not found",
            ),
            (
                "",
                Some(("PGSERVICE", "nope")),
                "\"nope\" (from PGSERVICE) not found",
            ),
            (
                "service=svc",
                Some(("PGSERVICEFILE", "/nonexistent")),
                "service file \"/nonexistent\" not found",
            ),
        ] {
            let mut v = vars.to_vec();
            if let Some((k, val)) = extra {
                v.retain(|(n, _)| *n != k);
                v.push((k, val));
            }
            let e = resolve_in(conn, &v, home.path()).unwrap_err().to_string();
            assert!(e.contains(want), "{conn}: {e}");
        }
        for (section, want) in [
            ("host = spaced", "syntax error in service file"),
            ("nonsense", "syntax error in service file"),
            ("service=other", "nested service specifications"),
            (
                "sslmode=bogus",
                "invalid sslmode \"bogus\" (from service \"bad\"",
            ),
        ] {
            std::fs::write(&user_file, format!("[bad]\n{section}\n")).unwrap();
            let e = resolve_in("service=bad", &vars, home.path())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{section}: {e}");
        }
    }

    #[test]
    fn targets_one_per_host_with_their_own_passwords() {
        let home = tempfile::tempdir().unwrap();
        let pf = home.path().join("pgpass");
        private_file(
            &pf,
            "# comment\nh1:5432:*:bob:one\nh2:6000:*:bob:two\\:still two:ignored\n\
             localhost:5432:*:bob:local\n*:*:*:*:fallback\n",
        );
        let pf = pf.to_str().unwrap();
        let p = resolve_in(
            &format!("host=h1,h2,h3, port=5432,6000,7000,5432 user=bob passfile={pf}"),
            &[],
            home.path(),
        )
        .unwrap();
        let t = p.targets().unwrap();
        let got: Vec<(Option<&str>, &str, Option<&str>)> = t
            .iter()
            .map(|t| (t.get("host"), t.get("port").unwrap(), t.get("password")))
            .collect();
        assert_eq!(
            got,
            [
                (Some("h1"), "5432", Some("one")),
                (Some("h2"), "6000", Some("two:still two")),
                (Some("h3"), "7000", Some("fallback")),
                (Some(default_socket_dir()), "5432", Some("local")),
            ]
        );
        // One port serves every host; a password given is every host's.
        let p = resolve_in("host=a,b port=6 password=given", &[], home.path()).unwrap();
        let t = p.targets().unwrap();
        assert_eq!(t[1].get("port"), Some("6"));
        assert_eq!(t[1].get("password"), Some("given"));
        // hostaddr: one per host; the password file then matches the host name.
        let p = resolve_in(
            &format!("host=h1,h2 hostaddr=10.0.0.1,10.0.0.2 port=5432,6000 user=bob passfile={pf}"),
            &[],
            home.path(),
        )
        .unwrap();
        let t = p.targets().unwrap();
        assert_eq!(t[1].get("hostaddr"), Some("10.0.0.2"));
        assert_eq!(t[1].get("password"), Some("two:still two"));
        for (conn, want) in [
            (
                "host=a,b,c port=1,2",
                "could not match 2 port numbers to 3 hosts",
            ),
            (
                "host=a,b hostaddr=10.0.0.1",
                "could not match 2 host names to 1 hostaddr values",
            ),
        ] {
            let e = resolve_in(conn, &[], home.path()).unwrap_err().to_string();
            assert!(e.contains(want), "{conn}: {e}");
        }

        // A world-readable password file is ignored, as libpq does.
        std::fs::set_permissions(pf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p = resolve_in(&format!("host=h1 user=bob passfile={pf}"), &[], home.path()).unwrap();
        assert_eq!(p.targets().unwrap()[0].get("password"), None);
    }

    #[test]
    fn round_trip_through_conninfo() {
        let p = ConnParams::parse("dbname='a b' user=x password='it''s'").unwrap_err();
        // libpq does not treat '' as an escaped quote: the value ends and "s'" starts a new key.
        assert!(p.to_string().contains("malformed"));
        let p = ConnParams::parse(r"dbname='a b' password='it\'s'").unwrap();
        let again = ConnParams::parse(&p.to_conninfo()).unwrap();
        assert_eq!(p, again);
    }

    #[test]
    fn connect_timeout_follows_libpq() {
        let t = |v: &str| {
            let mut p = ConnParams::default();
            p.params.insert("connect_timeout".into(), v.into());
            p.connect_timeout()
        };
        assert_eq!(t("0").unwrap(), None);
        assert_eq!(t("1").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(t(" 10 ").unwrap(), Some(Duration::from_secs(10)));
        assert!(t("soon").is_err());
    }

    #[test]
    fn the_crate_config_refuses_what_it_cannot_choose() {
        let p = ConnParams::parse("host=a,b target_session_attrs=standby").unwrap();
        let e = p.to_config().unwrap_err().to_string();
        assert!(e.contains("target_session_attrs=standby"), "{e}");
        let cfg = ConnParams::parse("host=a,/sock port=1,2 target_session_attrs=read-write")
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!(cfg.get_hosts().len(), 2);
        assert_eq!(cfg.get_ports(), &[1, 2]);
    }
}
