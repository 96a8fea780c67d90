//! Open a connection the way libpq would for the same parameters, TLS included.
//!
//! Several hosts are tried in order as libpq tries them (`conn::connect_first`: on to the next
//! when one cannot be reached, target_session_attrs checked on each session). sslmode: disable and
//! allow/prefer (try TLS, fall back to plain when the server has none; allow is treated as
//! prefer), require (encrypt; like libpq it also verifies the CA when a root certificate is given
//! or ~/.postgresql/root.crt exists), verify-ca (CA verified, any host name), verify-full (CA and
//! host name verified). sslrootcert=system uses the system's CA store. Like libpq, nothing is
//! encrypted over a Unix-domain socket.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use postgres::config::SslMode;
use postgres_openssl::MakeTlsConnector;

use crate::engine::wire as steep_wire;

use crate::conn::{ConnParams, HostFailure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    None,
    Ca,
    Full,
}

/// Connect with `params` (already resolved: see `ConnParams::resolve`).
pub fn connect(params: &ConnParams) -> Result<postgres::Client> {
    Ok(open(params)?.0)
}

/// Connect with `params` and say which server answered: the parameters returned name that one
/// host, so that further connections for the same work reach the same server.
pub fn open(params: &ConnParams) -> Result<(postgres::Client, ConnParams)> {
    crate::conn::connect_first(params, attempt)
}

/// One attempt at the one host `target` names.
fn attempt(target: &ConnParams) -> Result<postgres::Client, HostFailure> {
    let endpoint = target.endpoint();
    let (cfg, tls) = setup(target).map_err(HostFailure::Stop)?;
    let limit = target.connect_timeout().map_err(HostFailure::Stop)?;
    let connect = move || match tls {
        None => cfg.connect(postgres::NoTls),
        Some(tls) => cfg.connect(tls),
    };
    // libpq's connect_timeout bounds each host's whole connection setup; the driver's bounds only
    // the socket connect, so a server that accepts and then never answers would hang forever.
    let result = match limit {
        None => connect(),
        Some(limit) => {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(connect());
            });
            match rx.recv_timeout(limit) {
                Ok(r) => r,
                Err(_) => {
                    return Err(HostFailure::TryNext(anyhow!(
                        "could not connect to {endpoint}: no answer within connect_timeout ({} \
                         s); check host, port and firewalls",
                        limit.as_secs()
                    )))
                }
            }
        }
    };
    result.map_err(|e| {
        let why = explain(&e, &endpoint, target);
        if crate::conn::try_next_host(&e) {
            HostFailure::TryNext(why)
        } else {
            HostFailure::Stop(why)
        }
    })
}

/// How certificates are checked for `target`'s sslmode, and the root certificate and
/// ~/.postgresql it uses.
fn verification(target: &ConnParams) -> (SslMode, Verify, Option<PathBuf>, Option<PathBuf>) {
    let mode = target.get("sslmode").unwrap_or("prefer");
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let pg_dir = home.as_ref().map(|h| h.join(".postgresql"));
    let root_cert = target
        .get("sslrootcert")
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            pg_dir
                .as_ref()
                .map(|d| d.join("root.crt"))
                .filter(|p| p.is_file())
        });
    let (ssl_mode, verify) = match mode {
        "disable" => (SslMode::Disable, Verify::None),
        "allow" | "prefer" => (SslMode::Prefer, Verify::None),
        "require" if root_cert.is_some() => (SslMode::Require, Verify::Ca),
        "require" => (SslMode::Require, Verify::None),
        "verify-ca" => (SslMode::Require, Verify::Ca),
        "verify-full" => (SslMode::Require, Verify::Full),
        other => unreachable!("sslmode {other:?} is checked when it is set"),
    };
    (ssl_mode, verify, root_cert, pg_dir)
}

/// The driver's configuration and TLS connector for one host.
fn setup(target: &ConnParams) -> Result<(postgres::Config, Option<MakeTlsConnector>)> {
    let (ssl_mode, verify, root_cert, pg_dir) = verification(target);
    // libpq never asks for TLS over a Unix-domain socket, whatever sslmode says.
    let unix_socket =
        target.get("hostaddr").is_none() && target.get("host").is_some_and(|h| h.starts_with('/'));
    let ssl_mode = if unix_socket {
        SslMode::Disable
    } else {
        ssl_mode
    };
    let mut cfg = target.to_config()?;
    cfg.ssl_mode(ssl_mode);
    let tls = match ssl_mode {
        SslMode::Disable => None,
        _ => Some(tls_connector(
            target,
            verify,
            root_cert.as_deref(),
            pg_dir.as_deref(),
        )?),
    };
    Ok((cfg, tls))
}

fn tls_connector(
    params: &ConnParams,
    verify: Verify,
    root_cert: Option<&Path>,
    pg_dir: Option<&Path>,
) -> Result<MakeTlsConnector> {
    let (connector, sni) = ssl_connector(params, verify, root_cert, pg_dir)?;
    let mut connector = MakeTlsConnector::new(connector);
    if verify == Verify::Ca || !sni {
        connector.set_callback(move |config, _| {
            if verify == Verify::Ca {
                config.set_verify_hostname(false);
            }
            config.set_use_server_name_indication(sni);
            Ok(())
        });
    }
    Ok(connector)
}

/// TLS for the engine's replication connections (`engine::wire`), configured exactly as the
/// `postgres` crate's connections are.
struct ReplicationTls;

impl steep_wire::TlsUpgrade for ReplicationTls {
    fn upgrade(
        &self,
        p: &ConnParams,
        host: &str,
        tcp: std::net::TcpStream,
    ) -> Result<Box<dyn steep_wire::TlsStream>> {
        let (_, verify, root_cert, pg_dir) = verification(p);
        let (connector, sni) = ssl_connector(p, verify, root_cert.as_deref(), pg_dir.as_deref())?;
        let mut config = connector.configure().context("setting up TLS")?;
        config.set_verify_hostname(verify == Verify::Full);
        config.set_use_server_name_indication(sni);
        let stream = config
            .connect(host, tcp)
            .map_err(|e| anyhow!("TLS with {}: {e}", p.endpoint()))?;
        Ok(Box::new(stream))
    }
}

/// Let the engine's replication connections speak TLS (the binary calls this at start).
pub fn install_replication_tls() {
    steep_wire::set_tls(Box::new(ReplicationTls));
}

/// The TLS settings of a connection as libpq reads them; whether to send the host name (SNI).
fn ssl_connector(
    params: &ConnParams,
    verify: Verify,
    root_cert: Option<&Path>,
    pg_dir: Option<&Path>,
) -> Result<(SslConnector, bool)> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).context("setting up TLS")?;
    if verify == Verify::None {
        b.set_verify(SslVerifyMode::NONE);
    } else {
        let root = root_cert.ok_or_else(|| {
            anyhow!(
                "sslmode={} needs a root certificate: set sslrootcert (a file, or \"system\") or \
                 put one in ~/.postgresql/root.crt",
                params.get("sslmode").unwrap_or("")
            )
        })?;
        if root == Path::new("system") {
            b.set_default_verify_paths()
                .context("loading the system's CA certificates")?;
        } else {
            b.set_ca_file(root)
                .with_context(|| format!("reading the root certificate {}", root.display()))?;
        }
        b.set_verify(SslVerifyMode::PEER);
    }
    // libpq's default floor is TLS 1.2; no ceiling unless one is given.
    let version = |key| match params.get(key).map(str::to_ascii_lowercase).as_deref() {
        Some("tlsv1") => Some(SslVersion::TLS1),
        Some("tlsv1.1") => Some(SslVersion::TLS1_1),
        Some("tlsv1.2") => Some(SslVersion::TLS1_2),
        Some("tlsv1.3") => Some(SslVersion::TLS1_3),
        _ => None,
    };
    b.set_min_proto_version(version("ssl_min_protocol_version").or(Some(SslVersion::TLS1_2)))
        .context("setting ssl_min_protocol_version")?;
    b.set_max_proto_version(version("ssl_max_protocol_version"))
        .context("setting ssl_max_protocol_version")?;
    if params.get("sslnegotiation") == Some("direct") {
        postgres_openssl::set_postgresql_alpn(&mut b)
            .context("setting up sslnegotiation=direct")?;
    }
    let cert = match params.get("sslcertmode") {
        Some("disable") => None,
        _ => params
            .get("sslcert")
            .filter(|c| !c.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                pg_dir
                    .map(|d| d.join("postgresql.crt"))
                    .filter(|p| p.is_file())
            }),
    };
    if let Some(cert) = cert {
        b.set_certificate_chain_file(&cert)
            .with_context(|| format!("reading the client certificate {}", cert.display()))?;
        let key = params
            .get("sslkey")
            .filter(|k| !k.is_empty())
            .map(PathBuf::from)
            .or_else(|| pg_dir.map(|d| d.join("postgresql.key")))
            .ok_or_else(|| anyhow!("sslcert is set but sslkey is not"))?;
        b.set_private_key_file(&key, SslFiletype::PEM)
            .with_context(|| format!("reading the client key {}", key.display()))?;
    }
    // libpq sends the host name (SNI) unless sslsni says otherwise.
    let sni = params.get("sslsni").is_none_or(|v| v.starts_with('1'));
    Ok((b.build(), sni))
}

/// Turn a connection error into one line that says what happened and what to do.
fn explain(e: &postgres::Error, endpoint: &str, params: &ConnParams) -> anyhow::Error {
    let user = params.get("user").unwrap_or("?");
    if let Some(db) = e.as_db_error() {
        let msg = db.message();
        let hint = match db.code().code() {
            "28P01" => format!(
                ": check the password for role \"{user}\" (password=, PGPASSWORD or ~/.pgpass)"
            ),
            // Also the code of a role that does not exist, which pg_hba.conf cannot fix.
            "28000" if msg.starts_with("role ") => ": check user (or PGUSER)".to_string(),
            "28000" => ": the server's pg_hba.conf does not allow this connection; ask its \
                         administrator for an entry"
                .to_string(),
            "3D000" => ": check dbname (or PGDATABASE)".to_string(),
            _ => String::new(),
        };
        return anyhow!("could not connect to {endpoint}: {msg}{hint}");
    }
    let text = format!("{e:#}");
    let detail = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let hint = if text.contains("timeout") || detail.contains("timed out") {
        ": the server did not answer within connect_timeout; check host, port and firewalls"
    } else if detail.contains("Connection refused") {
        ": nothing listens there; check that PostgreSQL runs and the host and port"
    } else if detail.contains("No such file or directory") {
        ": no PostgreSQL socket there; check host (a socket directory) and port"
    } else if text.contains("bytes remaining on stream") || text.contains("unexpected message") {
        ": whatever answers there does not speak the PostgreSQL protocol; check host and port"
    } else if detail.contains("password missing") {
        ": the server asks for a password and none was found; give password=, PGPASSWORD or a \
         password file line for this host and port"
    } else if text.contains("server does not support TLS") {
        ": the server has no TLS; use sslmode=prefer or disable, or enable ssl on the server"
    } else if detail.contains("certificate verify failed") || detail.contains("certificate") {
        ": TLS certificate verification failed; check sslrootcert and the server's certificate \
         (sslmode=verify-full also checks the host name)"
    } else {
        ""
    };
    let detail = if detail.is_empty() { text } else { detail };
    anyhow!("could not connect to {endpoint}: {detail}{hint}")
}
