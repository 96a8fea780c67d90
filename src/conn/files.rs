//! The files libpq reads for a connection: the service file (pg_service.conf) and the password
//! file (.pgpass), each read exactly as libpq reads it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use super::{default_socket_dir, ConnParams, Environment, Origin, DEFAULT_SYSCONFDIR, KEYWORDS};

/// libpq reads service files with a 1024-byte line buffer and refuses longer lines.
const SERVICE_LINE_MAX: usize = 1023;

/// Fill what `p` leaves unset from service `name`: PGSERVICEFILE (which must exist) or
/// ~/.pg_service.conf (when it exists) first, then PGSYSCONFDIR/pg_service.conf. The first file
/// with the section wins; no section anywhere is an error, as in libpq.
pub(super) fn apply_service(
    p: &mut ConnParams,
    name: &str,
    origin: Origin,
    env: &Environment,
) -> Result<()> {
    let mut looked = Vec::new();
    let user_file = match (env.var)("PGSERVICEFILE") {
        Some(f) => Some(PathBuf::from(f)),
        None => env
            .home()
            .map(|h| h.join(".pg_service.conf"))
            .filter(|f| f.exists()),
    };
    if let Some(file) = user_file {
        if let Some(entries) = read_service(&file, name)? {
            return fill(p, name, &file, entries);
        }
        looked.push(file.display().to_string());
    }
    let dir = (env.var)("PGSYSCONFDIR").unwrap_or_else(|| DEFAULT_SYSCONFDIR.to_string());
    let file = PathBuf::from(format!("{dir}/pg_service.conf"));
    if file.exists() {
        if let Some(entries) = read_service(&file, name)? {
            return fill(p, name, &file, entries);
        }
        looked.push(file.display().to_string());
    } else {
        looked.push(format!("{} (absent)", file.display()));
    }
    bail!(
        "definition of service \"{name}\"{origin} not found (looked in {}): check the name, or \
         point PGSERVICEFILE or PGSYSCONFDIR at the file that defines it",
        looked.join(", ")
    )
}

fn fill(p: &mut ConnParams, name: &str, file: &Path, entries: Vec<Entry>) -> Result<()> {
    for e in entries {
        if !KEYWORDS.iter().any(|(k, _, _)| *k == e.key) {
            bail!(
                "syntax error in service file \"{}\", line {}: \"{}\" is not a libpq keyword",
                file.display(),
                e.line,
                e.key
            );
        }
        // The connection string's values win; within the section, the first one does.
        if !p.params.contains_key(&e.key) {
            let origin = Origin::Service {
                name,
                file,
                line: e.line,
            };
            p.insert(&e.key, e.value, origin)?;
        }
    }
    Ok(())
}

struct Entry {
    line: usize,
    key: String,
    value: String,
}

/// The `key=value` lines of section `[name]` (None when the file has no such section). Like
/// libpq: surrounding whitespace is dropped, `#` starts a comment line, values are taken as
/// written (no quoting), and a second `service=` is refused.
fn read_service(file: &Path, name: &str) -> Result<Option<Vec<Entry>>> {
    let bytes = std::fs::read(file).map_err(|e| {
        anyhow!(
            "service file \"{}\" not found ({e}): check PGSERVICEFILE",
            file.display()
        )
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let syntax = |line: usize, why: &str| {
        anyhow!(
            "syntax error in service file \"{}\", line {line}: {why}",
            file.display()
        )
    };
    let mut found = false;
    let mut entries = Vec::new();
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        if raw.len() >= SERVICE_LINE_MAX {
            bail!(
                "line {line_no} too long in service file \"{}\" (libpq reads at most {} \
                 characters a line)",
                file.display(),
                SERVICE_LINE_MAX - 1
            );
        }
        let line = raw.trim_matches(is_c_space);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            if found {
                break;
            }
            found = section
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(']'));
            continue;
        }
        if !found {
            continue;
        }
        if line.starts_with("ldap") {
            bail!(
                "service \"{name}\" in {}, line {line_no}, is an LDAP lookup, which steep does \
                 not do: write the connection options into the file",
                file.display()
            );
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(syntax(line_no, "expected keyword=value"));
        };
        if key == "service" {
            bail!(
                "nested service specifications not supported in service file \"{}\", line \
                 {line_no}",
                file.display()
            );
        }
        entries.push(Entry {
            line: line_no,
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(found.then_some(entries))
}

/// C's isspace in the "C" locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// A password file (`hostname:port:database:username:password` lines), read once for every host.
pub(super) struct PasswordFile {
    text: String,
}

impl PasswordFile {
    /// The file when libpq would use it: a plain file with no group or world access (libpq
    /// warns about the others and goes on without them).
    pub(super) fn load(path: &Path) -> Option<Self> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            eprintln!(
                "warning: password file \"{}\" is not a plain file: it is ignored",
                path.display()
            );
            return None;
        }
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: password file \"{}\" has group or world access; permissions should be \
                 u=rw (0600) or less: it is ignored",
                path.display()
            );
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        Some(Self {
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// The password of the first line that matches, as libpq's passwordFromFile finds it: `*`
    /// matches any value, a backslash escapes `:` and `\`, and the password ends at the first
    /// unescaped `:`. `host` is the host name or socket directory (or, when no host is given,
    /// the hostaddr); the default socket directory and an empty host match `localhost`.
    pub(super) fn lookup(&self, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
        let host = if host.is_empty() || host == default_socket_dir() {
            "localhost"
        } else {
            host
        };
        let port = if port.is_empty() { "5432" } else { port };
        for line in self.text.split('\n') {
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut rest = line;
            let mut matched = true;
            for token in [host, port, db, user] {
                match match_field(rest, token) {
                    Some(r) => rest = r,
                    None => {
                        matched = false;
                        break;
                    }
                }
            }
            if matched {
                return Some(unescape_password(rest));
            }
        }
        None
    }
}

/// libpq's pwdfMatchesString: does the field at the start of `buf` match `token`? Returns what
/// follows the field's `:`.
fn match_field<'a>(buf: &'a str, token: &str) -> Option<&'a str> {
    if let Some(rest) = buf.strip_prefix("*:") {
        return Some(rest);
    }
    let (b, t) = (buf.as_bytes(), token.as_bytes());
    let (mut i, mut j, mut escaped) = (0, 0, false);
    while i < b.len() {
        if b[i] == b'\\' && !escaped {
            escaped = true;
            i += 1;
            continue;
        }
        if b[i] == b':' && j == t.len() && !escaped {
            return Some(&buf[i + 1..]);
        }
        escaped = false;
        if j == t.len() || b[i] != t[j] {
            return None;
        }
        i += 1;
        j += 1;
    }
    None
}

fn unescape_password(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() && b[i] != b':' {
        if b[i] == b'\\' && i + 1 < b.len() {
            i += 1;
        }
        out.push(b[i]);
        i += 1;
    }
    // Only ASCII bytes were dropped, so the rest is still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}
