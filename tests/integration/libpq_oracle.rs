//! steep against libpq itself: for each connection string and environment of a matrix, PostgreSQL
//! 18's `psql` (the oracle) and `steep version` must reach the same server as the same user, or
//! both fail. Where steep refuses a setting it cannot honour, psql must connect and steep must
//! say which setting it refused.
//!
//! The servers: A, a primary; B, a primary whose sessions are read-only
//! (default_transaction_read_only); S, a hot standby of A. A `steep local` sandbox runs throughout,
//! so any fallback to it instead of the server libpq chose shows up as a wrong port.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use steep::cli::sandbox::{ClusterOptions, TempCluster};

/// A port nothing listens on (connections are refused at once).
const CLOSED: u16 = 1;

/// What a client did with a case.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Connected to the server on this port as this user.
    Server(u16, String),
    Failed(String),
}

#[derive(Debug)]
enum Want {
    /// Both reach the server on this port as this user.
    Server(u16, &'static str),
    /// Both fail.
    Fail,
    /// libpq connects; steep refuses, with this text in its error.
    Refused(&'static str),
}

struct Case {
    conn: Option<String>,
    env: Vec<(&'static str, String)>,
    /// The HOME both clients see (for ~/.pgpass and ~/.pg_service.conf).
    home: PathBuf,
    want: Want,
}

fn psql(case: &Case) -> Outcome {
    // PostgreSQL 18's libpq whichever server version the suite runs against (15's lacks
    // load_balance_hosts and other 16+ options).
    let psql = steep::cli::home::default_pg_config()
        .parent()
        .unwrap()
        .join("psql");
    let mut cmd = Command::new(psql);
    cmd.env_clear()
        .env("HOME", &case.home)
        .envs(case.env.iter().map(|(k, v)| (k, v)))
        .args([
            "-XAtw",
            "-c",
            "select current_user, current_setting('port')",
        ]);
    if let Some(c) = &case.conn {
        cmd.args(["-d", c]);
    }
    let out = cmd.output().expect("run psql");
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().split_once('|') {
        Some((user, port)) if out.status.success() => {
            Outcome::Server(port.parse().unwrap(), user.to_string())
        }
        _ => Outcome::Failed(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

fn steep_outcome(steep_home: &Path, case: &Case) -> Outcome {
    let mut cmd = steep(steep_home);
    cmd.env("HOME", &case.home)
        .envs(case.env.iter().map(|(k, v)| (k, v)))
        .args(["version", "--json"]);
    if let Some(c) = &case.conn {
        cmd.args(["-c", c]);
    }
    let out = cmd.output().unwrap();
    let err = stderr(&out).trim().to_string();
    if !out.status.success() {
        return Outcome::Failed(err);
    }
    // Without -c, `steep version` reports an unreachable server as a warning and no server.
    let v = json(&stdout(&out));
    match v["server"]["port"].as_u64() {
        Some(port) => Outcome::Server(port as u16, v["server"]["user"].as_str().unwrap().into()),
        None => Outcome::Failed(err),
    }
}

/// A hot standby of `primary`, made with pg_basebackup into a fresh cluster's directory.
fn standby_of(primary: &TempCluster) -> TempCluster {
    let mut s = node_with(ClusterOptions {
        preload: false,
        durable: false,
        ..ClusterOptions::default()
    });
    s.stop().unwrap();
    let data = s.data_dir();
    std::fs::remove_dir_all(&data).unwrap();
    let port = primary.port().to_string();
    let out = s
        .run_server_cmd(
            "pg_basebackup",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-h".as_ref(),
                primary.socket_dir().as_os_str(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-X".as_ref(),
                "stream".as_ref(),
                "--no-sync".as_ref(),
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "pg_basebackup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.write_data_file("standby.signal", b"", 0o600).unwrap();
    // The copy's configuration names the primary's socket directory: point it at its own.
    let auto = format!(
        "primary_conninfo = 'host={} port={port} user=postgres'\nunix_socket_directories = '{}'\n",
        primary.socket_dir().display(),
        s.socket_dir().display()
    );
    s.write_data_file("postgresql.auto.conf", auto.as_bytes(), 0o600)
        .unwrap();
    s.cluster_mut().start().unwrap();
    s
}

/// Stops the `steep local` sandbox when the test ends, passed or not.
struct Sandbox<'a>(&'a Path);

impl Drop for Sandbox<'_> {
    fn drop(&mut self) {
        let _ = steep(self.0).args(["local", "down"]).output();
    }
}

fn private_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn steep_reaches_the_server_libpq_reaches() {
    let steep_home = temp_home();
    let opts = ClusterOptions {
        preload: false,
        durable: false,
        hba: vec!["host all pwuser 127.0.0.1/32 scram-sha-256".into()],
        ..ClusterOptions::default()
    };
    let a = node_with(opts.clone());
    let b = node_with(ClusterOptions {
        settings: vec![("default_transaction_read_only".into(), "on".into())],
        ..opts
    });
    sql(
        &a.connection_string("postgres"),
        "CREATE ROLE pwuser LOGIN PASSWORD 'pw-a'",
    );
    sql(
        &format!(
            "{} options='-c default_transaction_read_only=off'",
            b.connection_string("postgres")
        ),
        "CREATE ROLE pwuser LOGIN PASSWORD 'pw-b'",
    );
    let s = standby_of(&a);
    ok(steep(steep_home.path()).args(["local", "up"]));
    let _sandbox = Sandbox(steep_home.path());
    let (pa, pb, ps) = (a.port(), b.port(), s.port());

    // Files: services, passwords, homes.
    let files = steep_home.path().join("oracle");
    std::fs::create_dir_all(&files).unwrap();
    let services = files.join("services.conf");
    std::fs::write(
        &services,
        format!(
            "# the user's service file\n\
             [svc_a]\nhost=127.0.0.1\nport={pa}\nuser=postgres\ndbname=postgres\n\n\
             [svc_b]\nhost=127.0.0.1\nport={pb}\nuser=postgres\ndbname=postgres\n\n\
             [svc_multi]\nhost=127.0.0.1,127.0.0.1\nport={CLOSED},{pb}\nuser=pwuser\n\
             dbname=postgres\n\n\
             [svc_standby]\nhost=127.0.0.1,127.0.0.1\nport={pa},{ps}\nuser=postgres\n\
             target_session_attrs=standby\n\n\
             [svc_bad]\nhost = 127.0.0.1\n\n\
             [svc_badvalue]\nhost=127.0.0.1\nport={pa}\ntarget_session_attrs=bogus\n"
        ),
    )
    .unwrap();
    let sysconf = files.join("sysconf");
    std::fs::create_dir_all(&sysconf).unwrap();
    std::fs::write(
        sysconf.join("pg_service.conf"),
        format!(
            "[svc_sys]\nhost=127.0.0.1\nport={ps}\nuser=postgres\n\
             [svc_a]\nhost=127.0.0.1\nport={pb}\nuser=postgres\n"
        ),
    )
    .unwrap();
    let empty_sysconf = files.join("empty-sysconf");
    std::fs::create_dir_all(&empty_sysconf).unwrap();
    let pgpass = files.join("pgpass");
    let pgpass_text = format!(
        "127.0.0.1:{pa}:*:pwuser:pw-a\n127.0.0.1:{pb}:*:pwuser:pw-b\n127.0.0.1:{ps}:*:pwuser:pw-a\n"
    );
    private_file(&pgpass, &pgpass_text, 0o600);
    let open_pgpass = files.join("pgpass-readable");
    private_file(&open_pgpass, &pgpass_text, 0o644);
    // Homes: one with nothing, one with ~/.pgpass and ~/.pg_service.conf.
    let bare_home = files.join("bare-home");
    std::fs::create_dir_all(&bare_home).unwrap();
    let dot_home = files.join("dot-home");
    std::fs::create_dir_all(&dot_home).unwrap();
    private_file(&dot_home.join(".pgpass"), &pgpass_text, 0o600);
    std::fs::write(
        dot_home.join(".pg_service.conf"),
        format!("[svc_home]\nhost=127.0.0.1\nport={pb}\nuser=postgres\n"),
    )
    .unwrap();

    let services = services.to_string_lossy().to_string();
    let pgpass = pgpass.to_string_lossy().to_string();
    let open_pgpass = open_pgpass.to_string_lossy().to_string();
    let sock = a.socket_dir().to_string_lossy().to_string();
    let sock_uri: String = sock.replace('/', "%2F");
    let two = |p1: u16, p2: u16| format!("host=127.0.0.1,127.0.0.1 port={p1},{p2}");
    let pg = "user=postgres dbname=postgres";
    let pw = "user=pwuser dbname=postgres";

    use Want::{Fail, Refused, Server};
    type Row = (Option<String>, Vec<(&'static str, String)>, Want);
    let s_ = |s: &str| Some(s.to_string());
    let e = |pairs: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    };
    let mut rows: Vec<Row> = vec![
        // Plain forms.
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg}")),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!("postgresql://postgres@127.0.0.1:{pa}/postgres")),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!("host={sock} port={pa} user=postgres")),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!("postgresql://postgres@{sock_uri}:{pa}/postgres")),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!(
                "host=localhost hostaddr=127.0.0.1 port={pb} user=postgres"
            )),
            vec![],
            Server(pb, "postgres"),
        ),
        // Several hosts: the first is down.
        (
            s_(&format!("{} {pg}", two(CLOSED, pa))),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!(
                "postgresql://127.0.0.1:{CLOSED},127.0.0.1:{pb}/postgres?user=postgres"
            )),
            vec![],
            Server(pb, "postgres"),
        ),
        (
            s_(&format!(
                "host=127.0.0.1,127.0.0.1,127.0.0.1 port={pa},{pb} {pg}"
            )),
            vec![],
            Fail,
        ),
        (
            s_(&format!(
                "host=127.0.0.1 hostaddr=127.0.0.1,127.0.0.1 port={pa}"
            )),
            vec![],
            Fail,
        ),
        (
            s_(&format!("{} {pg} load_balance_hosts=random", two(pa, pa))),
            vec![],
            Server(pa, "postgres"),
        ),
        // target_session_attrs against a primary (A), a read-only primary (B), a standby (S).
        (
            s_(&format!("{} {pg} target_session_attrs=any", two(pa, pb))),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!(
                "{} {pg} target_session_attrs=read-write",
                two(pb, pa)
            )),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!(
                "{} {pg} target_session_attrs=read-write",
                two(ps, pb)
            )),
            vec![],
            Fail,
        ),
        (
            s_(&format!(
                "{} {pg} target_session_attrs=read-only",
                two(pa, pb)
            )),
            vec![],
            Server(pb, "postgres"),
        ),
        (
            s_(&format!(
                "{} {pg} target_session_attrs=read-only",
                two(pa, ps)
            )),
            vec![],
            Server(ps, "postgres"),
        ),
        (
            s_(&format!(
                "{} {pg} target_session_attrs=primary",
                two(ps, pb)
            )),
            vec![],
            Server(pb, "postgres"),
        ),
        (
            s_(&format!(
                "{} {pg} target_session_attrs=standby",
                two(pa, ps)
            )),
            vec![],
            Server(ps, "postgres"),
        ),
        (
            s_(&format!(
                "{} {pg} target_session_attrs=standby",
                two(pa, pb)
            )),
            vec![],
            Fail,
        ),
        (
            s_(&format!(
                "{} {pg} target_session_attrs=prefer-standby",
                two(pa, ps)
            )),
            vec![],
            Server(ps, "postgres"),
        ),
        (
            s_(&format!(
                "{} {pg} target_session_attrs=prefer-standby",
                two(pb, pa)
            )),
            vec![],
            Server(pb, "postgres"),
        ),
        (
            s_(&format!(
                "{} {pg} target_session_attrs=prefer-standby",
                two(CLOSED, pa)
            )),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!("{} {pg} target_session_attrs=bogus", two(pa, pb))),
            vec![],
            Fail,
        ),
        (
            s_(&format!("{} {pg}", two(pa, pb))),
            e(&[("PGTARGETSESSIONATTRS", "read-only")]),
            Server(pb, "postgres"),
        ),
        (
            s_(&format!("{} {pg}", two(pa, ps))),
            e(&[("PGTARGETSESSIONATTRS", "primary")]),
            Server(pa, "postgres"),
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg}")),
            e(&[("PGTARGETSESSIONATTRS", "bogus")]),
            Fail,
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg}")),
            e(&[("PGTARGETSESSIONATTRS", "")]),
            Fail,
        ),
        // channel_binding and sslmode (these servers have no TLS).
        (
            s_(&format!(
                "host=127.0.0.1 port={pa} {pg} channel_binding=disable"
            )),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!(
                "host=127.0.0.1 port={pa} {pg} channel_binding=prefer"
            )),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!(
                "host=127.0.0.1 port={pa} {pg} channel_binding=require"
            )),
            vec![],
            Fail,
        ),
        (
            s_(&format!(
                "host=127.0.0.1 port={pa} {pg} channel_binding=bogus"
            )),
            vec![],
            Fail,
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg}")),
            e(&[("PGCHANNELBINDING", "bogus")]),
            Fail,
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg} sslmode=disable")),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg} sslmode=allow")),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg} sslmode=prefer")),
            vec![],
            Server(pa, "postgres"),
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg} sslmode=bogus")),
            vec![],
            Fail,
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg}")),
            e(&[("PGSSLMODE", "bogus")]),
            Fail,
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg}")),
            e(&[("PGSSLMODE", "")]),
            Fail,
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg}")),
            e(&[("PGREQUIRESSL", "1")]),
            Fail,
        ),
        // Services: chosen by the string or PGSERVICE; the string's values win over the
        // service's, the service's over the environment's.
        (
            s_("service=svc_a"),
            e(&[("PGSERVICEFILE", &services)]),
            Server(pa, "postgres"),
        ),
        (
            None,
            e(&[("PGSERVICEFILE", &services), ("PGSERVICE", "svc_b")]),
            Server(pb, "postgres"),
        ),
        (
            s_(&format!("port={pa}")),
            e(&[("PGSERVICEFILE", &services), ("PGSERVICE", "svc_b")]),
            Server(pa, "postgres"),
        ),
        (
            s_("service=svc_a"),
            e(&[("PGSERVICEFILE", &services), ("PGPORT", &pb.to_string())]),
            Server(pa, "postgres"),
        ),
        (
            s_(&format!("postgresql:///postgres?service=svc_b&port={pa}")),
            e(&[("PGSERVICEFILE", &services)]),
            Server(pa, "postgres"),
        ),
        (
            None,
            e(&[("PGSERVICEFILE", &services), ("PGSERVICE", "svc_standby")]),
            Server(ps, "postgres"),
        ),
        (
            s_("service=svc_multi"),
            e(&[("PGSERVICEFILE", &services), ("PGPASSFILE", &pgpass)]),
            Server(pb, "pwuser"),
        ),
        (
            None,
            e(&[("PGSERVICEFILE", &services), ("PGSERVICE", "nope")]),
            Fail,
        ),
        (
            None,
            e(&[("PGSERVICEFILE", &services), ("PGSERVICE", "")]),
            Fail,
        ),
        (
            s_("service=svc_bad"),
            e(&[("PGSERVICEFILE", &services)]),
            Fail,
        ),
        (
            s_("service=svc_badvalue"),
            e(&[("PGSERVICEFILE", &services)]),
            Fail,
        ),
        (
            None,
            e(&[
                ("PGSERVICEFILE", "/nonexistent/services"),
                ("PGSERVICE", "svc_a"),
            ]),
            Fail,
        ),
        // PGSYSCONFDIR's file after the user's; the user's wins for a service both define.
        (
            s_("service=svc_sys"),
            e(&[
                ("PGSERVICEFILE", &services),
                ("PGSYSCONFDIR", &sysconf.to_string_lossy()),
            ]),
            Server(ps, "postgres"),
        ),
        (
            s_("service=svc_a"),
            e(&[
                ("PGSERVICEFILE", &services),
                ("PGSYSCONFDIR", &sysconf.to_string_lossy()),
            ]),
            Server(pa, "postgres"),
        ),
        // Passwords from the password file, looked up for each host.
        (
            s_(&format!("{} {pw}", two(CLOSED, pa))),
            e(&[("PGPASSFILE", &pgpass)]),
            Server(pa, "pwuser"),
        ),
        (
            s_(&format!(
                "{} {pw} target_session_attrs=read-write",
                two(pb, pa)
            )),
            e(&[("PGPASSFILE", &pgpass)]),
            Server(pa, "pwuser"),
        ),
        (
            s_(&format!(
                "{} {pw} target_session_attrs=standby",
                two(pb, ps)
            )),
            e(&[("PGPASSFILE", &pgpass)]),
            Server(ps, "pwuser"),
        ),
        (
            s_(&format!(
                "postgresql://pwuser@127.0.0.1:{CLOSED},127.0.0.1:{pb}/postgres"
            )),
            e(&[("PGPASSFILE", &pgpass)]),
            Server(pb, "pwuser"),
        ),
        (
            s_(&format!("host=127.0.0.1 port={pb} {pw}")),
            e(&[("PGPASSFILE", &open_pgpass)]),
            Fail,
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pw} password=wrong")),
            e(&[("PGPASSFILE", &pgpass)]),
            Fail,
        ),
        // The environment alone (the sandbox is running: none of these may end up there).
        (
            None,
            e(&[
                ("PGHOST", "127.0.0.1"),
                ("PGPORT", &pa.to_string()),
                ("PGUSER", "postgres"),
            ]),
            Server(pa, "postgres"),
        ),
        (
            None,
            e(&[
                ("PGHOST", "127.0.0.1,127.0.0.1"),
                ("PGPORT", &format!("{CLOSED},{pb}")),
                ("PGUSER", "postgres"),
                ("PGDATABASE", "postgres"),
            ]),
            Server(pb, "postgres"),
        ),
        (
            None,
            e(&[("PGHOST", "127.0.0.1"), ("PGPORT", &CLOSED.to_string())]),
            Fail,
        ),
        (None, e(&[("PGHOST", "127.0.0.1"), ("PGPORT", "abc")]), Fail),
        (
            None,
            e(&[
                ("PGHOST", "127.0.0.1"),
                ("PGPORT", &pa.to_string()),
                ("PGUSER", "nobody_here"),
            ]),
            Fail,
        ),
        (
            None,
            e(&[
                ("PGHOST", "127.0.0.1"),
                ("PGPORT", &pa.to_string()),
                ("PGUSER", "postgres"),
                ("PGCONNECT_TIMEOUT", "soon"),
            ]),
            Fail,
        ),
        // Malformed.
        (s_(&format!("hots=127.0.0.1 port={pa}")), vec![], Fail),
        (s_("host=127.0.0.1 port=70000"), vec![], Fail),
        (
            s_(&format!(
                "host=127.0.0.1 port={pa} {pg} load_balance_hosts=bogus"
            )),
            vec![],
            Fail,
        ),
        // What steep cannot honour: libpq connects, steep says why it will not.
        (
            s_(&format!(
                "host=127.0.0.1 port={pa} {pg} sslcrl=/nonexistent/crl.pem"
            )),
            vec![],
            Refused("sslcrl=/nonexistent/crl.pem is not supported by steep"),
        ),
        (
            s_(&format!("host=127.0.0.1 port={pa} {pg}")),
            e(&[("PGCLIENTENCODING", "LATIN1")]),
            Refused("(from PGCLIENTENCODING) is not supported by steep"),
        ),
        (
            s_(&format!("host={sock} port={pa} {pg} requirepeer=postgres")),
            vec![],
            Refused("requirepeer=postgres is not supported by steep"),
        ),
    ];
    // ~/.pgpass and ~/.pg_service.conf.
    let mut in_dot_home: Vec<Row> = vec![
        (
            s_(&format!("{} {pw}", two(CLOSED, pa))),
            vec![],
            Server(pa, "pwuser"),
        ),
        (
            None,
            e(&[("PGSERVICE", "svc_home")]),
            Server(pb, "postgres"),
        ),
    ];

    let mut cases: Vec<Case> = Vec::new();
    for (home, rows) in [(&bare_home, &mut rows), (&dot_home, &mut in_dot_home)] {
        for (conn, mut env, want) in rows.drain(..) {
            // The system service file is always one the test controls.
            if !env.iter().any(|(k, _)| *k == "PGSYSCONFDIR") {
                env.push(("PGSYSCONFDIR", empty_sysconf.to_string_lossy().into()));
            }
            cases.push(Case {
                conn,
                env,
                home: home.clone(),
                want,
            });
        }
    }

    let mut wrong = Vec::new();
    for case in &cases {
        let libpq = psql(case);
        let ours = steep_outcome(steep_home.path(), case);
        let fine = match (&case.want, &libpq, &ours) {
            (Want::Server(port, user), Outcome::Server(lp, lu), Outcome::Server(sp, su)) => {
                (lp, lu.as_str()) == (port, *user) && (sp, su.as_str()) == (port, *user)
            }
            (Want::Fail, Outcome::Failed(_), Outcome::Failed(_)) => true,
            (Want::Refused(text), Outcome::Server(..), Outcome::Failed(err)) => err.contains(text),
            _ => false,
        };
        if !fine {
            wrong.push(format!(
                "conn {:?} env {:?} home {}: want {:?}\n    libpq: {libpq:?}\n    steep: {ours:?}",
                case.conn,
                case.env,
                case.home.display(),
                case.want
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}
