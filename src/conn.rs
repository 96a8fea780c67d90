//! libpq-compatible connection parameters: conninfo strings (URI or key=value), the PG*
//! environment, `.pgpass`, and libpq's defaults — resolved the way libpq resolves them, then turned
//! into a `postgres::Config`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Keywords steep understands, with the environment variable libpq reads for each.
const KEYWORDS: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("dbname", Some("PGDATABASE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("application_name", Some("PGAPPNAME")),
    ("options", Some("PGOPTIONS")),
    ("sslmode", Some("PGSSLMODE")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("fallback_application_name", None),
];

/// Environment variables that choose *which* server to talk to. When none is set and no
/// connection string was given, steep may fall back to the local sandbox.
pub const TARGET_ENV: &[&str] = &["PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER"];

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
    /// `key=value` pairs. Unknown keywords are an error (as in libpq).
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        let params = if t.starts_with("postgresql://") || t.starts_with("postgres://") {
            parse_uri(t)?
        } else {
            parse_kv(t)?
        };
        let mut out = Self::default();
        for (k, v) in params {
            out.set(&k, v)?;
        }
        Ok(out)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) -> Result<()> {
        if !KEYWORDS.iter().any(|(k, _)| *k == key) {
            bail!(
                "invalid connection option \"{key}\" (known: {})",
                KEYWORDS
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.params.insert(key.to_string(), value.into());
        Ok(())
    }

    pub fn remove(&mut self, key: &str) {
        self.params.remove(key);
    }

    /// Fill every keyword not given from its PG* environment variable (libpq's rule: the
    /// environment supplies defaults, the connection string wins).
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        for (key, var) in KEYWORDS {
            if let Some(var) = var {
                if !self.params.contains_key(*key) {
                    if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                        self.params.insert(key.to_string(), v);
                    }
                }
            }
        }
    }

    /// Fill libpq's built-in defaults and a password from the password file when none was given.
    pub fn apply_defaults(&mut self, os_user: &str, home: Option<&Path>) -> Result<()> {
        if !self.params.contains_key("host") && !self.params.contains_key("hostaddr") {
            let sock = ["/var/run/postgresql", "/tmp"]
                .into_iter()
                .find(|d| Path::new(d).is_dir())
                .unwrap_or("/tmp");
            self.params.insert("host".into(), sock.into());
        }
        self.params
            .entry("port".into())
            .or_insert_with(|| "5432".into());
        self.params
            .entry("user".into())
            .or_insert_with(|| os_user.to_string());
        let user = self.params["user"].clone();
        self.params.entry("dbname".into()).or_insert(user);
        if !self.params.contains_key("password") {
            let passfile = match self.get("passfile") {
                Some(p) => Some(PathBuf::from(p)),
                None => home.map(|h| h.join(".pgpass")),
            };
            if let Some(pf) = passfile {
                if let Some(pw) = pgpass_lookup(&pf, self)? {
                    self.params.insert("password".into(), pw);
                }
            }
        }
        Ok(())
    }

    /// A display form safe for logs and output: the password is masked.
    pub fn redacted(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| {
                if k == "password" {
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

    /// Host and port for messages, e.g. "127.0.0.1:5432" or "/var/run/postgresql:5432".
    pub fn endpoint(&self) -> String {
        let host = self
            .get("host")
            .or_else(|| self.get("hostaddr"))
            .unwrap_or("localhost");
        format!("{host}:{}", self.get("port").unwrap_or("5432"))
    }

    pub fn connect_timeout(&self) -> Result<Option<Duration>> {
        match self.get("connect_timeout") {
            None => Ok(None),
            Some(v) => {
                let secs: i64 = v.trim().parse().map_err(|_| {
                    anyhow!("invalid connect_timeout \"{v}\": give a whole number of seconds")
                })?;
                // libpq: 0 or negative waits forever; 1 is raised to 2.
                Ok((secs > 0).then(|| Duration::from_secs(secs.max(2) as u64)))
            }
        }
    }

    /// The `postgres` crate's configuration for these parameters (TLS is chosen separately).
    pub fn to_config(&self) -> Result<postgres::Config> {
        let mut cfg = postgres::Config::new();
        let hosts: Vec<&str> = self
            .get("host")
            .map(|h| h.split(',').collect())
            .unwrap_or_default();
        for h in &hosts {
            let h = h.trim();
            if h.starts_with('/') {
                cfg.host_path(h);
            } else if !h.is_empty() {
                cfg.host(h);
            }
        }
        if let Some(addrs) = self.get("hostaddr") {
            for a in addrs.split(',') {
                let ip = a
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("invalid hostaddr \"{a}\": give an IP address"))?;
                cfg.hostaddr(ip);
            }
        }
        if let Some(ports) = self.get("port") {
            for p in ports.split(',') {
                let port: u16 = p.trim().parse().map_err(|_| {
                    anyhow!("invalid port \"{p}\": give a number between 1 and 65535")
                })?;
                cfg.port(port);
            }
        }
        if let Some(u) = self.get("user") {
            cfg.user(u);
        }
        if let Some(d) = self.get("dbname") {
            cfg.dbname(d);
        }
        if let Some(p) = self.get("password") {
            cfg.password(p);
        }
        if let Some(o) = self.get("options") {
            cfg.options(o);
        }
        let app = self
            .get("application_name")
            .or_else(|| self.get("fallback_application_name"))
            .unwrap_or("steep");
        cfg.application_name(app);
        if let Some(t) = self.connect_timeout()? {
            cfg.connect_timeout(t);
        }
        if let Some(k) = self.get("keepalives") {
            cfg.keepalives(k.trim() != "0");
        }
        if let Some(k) = self.get("keepalives_idle") {
            let secs: u64 = k
                .trim()
                .parse()
                .map_err(|_| anyhow!("invalid keepalives_idle \"{k}\": give seconds"))?;
            cfg.keepalives_idle(Duration::from_secs(secs));
        }
        if let Some(t) = self.get("target_session_attrs") {
            cfg.target_session_attrs(match t {
                "any" => postgres::config::TargetSessionAttrs::Any,
                "read-write" => postgres::config::TargetSessionAttrs::ReadWrite,
                other => bail!(
                    "target_session_attrs \"{other}\" is not supported: use any or read-write"
                ),
            });
        }
        Ok(cfg)
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

/// Look up a password in a libpq password file (`hostname:port:database:username:password`).
/// Like libpq, a file readable by group or others is ignored with a warning.
fn pgpass_lookup(path: &Path, p: &ConnParams) -> Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "warning: password file \"{}\" has group or world access; permissions should be \
             u=rw (0600) or less: it is ignored",
            path.display()
        );
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    let host = match p.get("host").or_else(|| p.get("hostaddr")) {
        Some(h) if !h.starts_with('/') => h.split(',').next().unwrap_or(h).to_string(),
        _ => "localhost".to_string(),
    };
    let port = p
        .get("port")
        .unwrap_or("5432")
        .split(',')
        .next()
        .unwrap_or("5432");
    let db = p.get("dbname").unwrap_or("");
    let user = p.get("user").unwrap_or("");
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = |pat: &str, val: &str| pat == "*" || pat == val;
        if matches(&fields[0], &host)
            && matches(&fields[1], port)
            && matches(&fields[2], db)
            && matches(&fields[3], user)
        {
            return Ok(Some(fields[4..].join(":")));
        }
    }
    Ok(None)
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("non-empty").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
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
    fn malformed_strings_are_clear_errors() {
        let e = ConnParams::parse("host").unwrap_err().to_string();
        assert!(e.contains("missing \"=\""), "{e}");
        let e = ConnParams::parse("host='abc").unwrap_err().to_string();
        assert!(e.contains("unterminated"), "{e}");
        let e = ConnParams::parse("hots=abc").unwrap_err().to_string();
        assert!(e.contains("invalid connection option \"hots\""), "{e}");
        let e = ConnParams::parse("postgresql://h/db?x%zz=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("percent"), "{e}");
        let e = ConnParams::parse("port=abc")
            .unwrap()
            .to_config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid port"), "{e}");
    }

    #[test]
    fn env_fills_only_missing_keys() {
        let mut p = ConnParams::parse("host=given").unwrap();
        p.apply_env(&env_of(&[
            ("PGHOST", "fromenv"),
            ("PGPORT", "7777"),
            ("PGPASSWORD", "pw"),
        ]));
        assert_eq!(p.get("host"), Some("given"));
        assert_eq!(p.get("port"), Some("7777"));
        assert_eq!(p.get("password"), Some("pw"));
        assert!(!p.redacted().contains("pw"));
        assert!(p.redacted().contains("password=********"));
    }

    #[test]
    fn defaults_and_pgpass() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pf = dir.path().join("pgpass");
        std::fs::write(
            &pf,
            "# comment\nother:*:*:*:no\nlocalhost:5432:*:bob:s3cr\\:et\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut p = ConnParams::parse("host=/tmp").unwrap();
        p.set("passfile", pf.to_string_lossy()).unwrap();
        p.apply_defaults("bob", None).unwrap();
        assert_eq!(p.get("port"), Some("5432"));
        assert_eq!(p.get("user"), Some("bob"));
        assert_eq!(p.get("dbname"), Some("bob"));
        assert_eq!(p.get("password"), Some("s3cr:et"));

        // A world-readable password file is ignored, as libpq does.
        std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut p = ConnParams::parse("host=/tmp user=bob").unwrap();
        p.set("passfile", pf.to_string_lossy()).unwrap();
        p.apply_defaults("bob", None).unwrap();
        assert_eq!(p.get("password"), None);
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
            p.set("connect_timeout", v).unwrap();
            p.connect_timeout()
        };
        assert_eq!(t("0").unwrap(), None);
        assert_eq!(t("1").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(t("10").unwrap(), Some(Duration::from_secs(10)));
        assert!(t("soon").is_err());
    }
}
