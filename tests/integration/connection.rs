//! Connection handling as libpq users expect it: conninfo forms, PG* variables, passwords,
//! .pgpass, TLS modes, timeouts, and clear one-line errors.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;
use steep::cli::sandbox::{ClusterOptions, PgInstall};
use steep::conn::{ConnParams, Environment};

fn version_server(home: &Path, conn: &str) -> serde_json::Value {
    let v = json(&ok(steep(home).args(["version", "--json", "-c", conn])));
    assert!(v["server"]["server_version"].is_string(), "{v}");
    v
}

#[test]
fn malformed_connection_strings_are_one_line_errors() {
    let home = temp_home();
    for (conn, want) in [
        ("host", "missing \"=\""),
        ("host='unterminated", "unterminated quoted value"),
        ("hots=localhost", "invalid connection option \"hots\""),
        ("postgresql://h:notaport/db", "invalid port \"notaport\""),
        ("postgresql://h/db?x=%zz", "bad percent-encoding"),
        (
            "host=127.0.0.1 sslmode=sometimes",
            "invalid sslmode \"sometimes\"",
        ),
        (
            "host=127.0.0.1 connect_timeout=soon",
            "invalid connect_timeout",
        ),
    ] {
        let err = fails(steep(home.path()).args(["doctor", "-c", conn]), 1);
        assert!(err.contains(want), "{conn}: {err}");
        let err = fails(steep(home.path()).args(["version", "-c", conn]), 1);
        assert!(err.contains(want), "{conn}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn connect_timeout_bounds_a_server_that_never_answers() {
    let home = temp_home();
    // Accepts TCP connections (the kernel's backlog) but never speaks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let err = fails(
        steep(home.path()).args([
            "version",
            "-c",
            &format!("host=127.0.0.1 port={port} connect_timeout=2 user=x"),
        ]),
        1,
    );
    let took = started.elapsed().as_secs_f64();
    assert!((1.9..6.0).contains(&took), "took {took} s");
    assert!(
        err.contains("no answer within connect_timeout (2 s)"),
        "{err}"
    );
    // Refused is immediate and says so.
    drop(silent);
    let err = fails(
        steep(home.path()).args([
            "version",
            "-c",
            &format!("host=127.0.0.1 port={port} user=x"),
        ]),
        1,
    );
    assert!(err.contains("nothing listens there"), "{err}");
}

#[test]
fn passwords_from_the_string_the_environment_and_pgpass() {
    let home = temp_home();
    let server = node_with(ClusterOptions {
        durable: false,
        hba: vec!["host all pwuser 127.0.0.1/32 scram-sha-256".into()],
        ..ClusterOptions::default()
    });
    sql(
        &server.connection_string("postgres"),
        "CREATE ROLE pwuser LOGIN PASSWORD 'right pw'",
    );
    let base = format!(
        "host=127.0.0.1 port={} user=pwuser dbname=postgres",
        server.port()
    );

    let err = fails(
        steep(home.path()).args(["version", "-c", &format!("{base} password=wrong")]),
        1,
    );
    assert!(
        err.contains("password authentication failed for user \"pwuser\""),
        "{err}"
    );
    assert!(err.contains("PGPASSWORD or ~/.pgpass"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the password leaked into the error: {err}"
    );

    version_server(home.path(), &format!("{base} password='right pw'"));
    let v = json(&ok(steep(home.path())
        .env("PGPASSWORD", "right pw")
        .args(["version", "--json", "-c", &base])));
    assert!(v["server"].is_object());

    let fake_home = home.path().join("h");
    std::fs::create_dir_all(&fake_home).unwrap();
    let pgpass = fake_home.join(".pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{}:*:pwuser:right pw\n", server.port()),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let v = json(&ok(steep(home.path())
        .env("HOME", &fake_home)
        .args(["version", "--json", "-c", &base])));
    assert!(v["server"].is_object());
    // PGPASSFILE names another file.
    let v = json(&ok(steep(home.path())
        .env("PGPASSFILE", &pgpass)
        .args(["version", "--json", "-c", &base])));
    assert!(v["server"].is_object());
}

#[test]
fn pg_environment_variables_and_awkward_database_names() {
    let home = temp_home();
    let server = node();
    let db = "my db 'x' \"ü\"";
    sql(
        &server.connection_string("postgres"),
        &format!("CREATE DATABASE {}", steep::sql::quote_ident(db)),
    );
    let v = json(&ok(steep(home.path())
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", server.port().to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", db)
        .args(["version", "--json"])));
    assert!(v["server"]["available_version"].is_string(), "{v}");
    // The same database through a URI and through key=value quoting, with init.
    init(home.path(), &server.connection_uri(db), &[]);
    let kv = format!(
        "host=127.0.0.1 port={} user=postgres dbname='{}'",
        server.port(),
        db.replace('\\', "\\\\").replace('\'', "\\'")
    );
    let r = init(home.path(), &kv, &[]);
    assert_eq!(r["changes"], serde_json::json!([]), "{r}");
    let err = fails(
        steep(home.path()).args(["version", "-c", &server.connection_uri("nope")]),
        1,
    );
    assert!(
        err.contains("database \"nope\" does not exist") && err.contains("dbname"),
        "{err}"
    );
}

/// A PostgreSQL built with TLS: the one under test, else Debian's 15.
fn tls_capable_install() -> Option<PgInstall> {
    let capable = |i: &PgInstall| {
        std::process::Command::new(&i.pg_config)
            .arg("--configure")
            .output()
            .map(|o| {
                let c = String::from_utf8_lossy(&o.stdout);
                c.contains("--with-openssl") || c.contains("--with-ssl=openssl")
            })
            .unwrap_or(false)
    };
    let under_test = install();
    if capable(&under_test) {
        return Some(under_test);
    }
    PgInstall::locate(Some(Path::new("/usr/lib/postgresql/15/bin/pg_config")))
        .ok()
        .filter(capable)
}

#[test]
fn sslmode_require_verify_ca_and_verify_full_against_a_self_signed_server() {
    let Some(pg) = tls_capable_install() else {
        // Neither the PostgreSQL under test nor Debian's 15 has TLS (scripts/test.sh installs 15).
        panic!(
            "no PostgreSQL with TLS support to test sslmode against: run scripts/setup.sh --pg 15"
        );
    };
    let home = temp_home();
    let server = node_with_install(
        pg,
        ClusterOptions {
            preload: false,
            durable: false,
            hba: vec![
                "hostssl all all 127.0.0.1/32 trust".into(),
                "hostnossl all all 127.0.0.1/32 reject".into(),
            ],
            ..ClusterOptions::default()
        },
    );
    let certs = home.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .arg("-keyout")
        .arg(certs.join("server.key"))
        .arg("-out")
        .arg(certs.join("server.crt"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let crt = std::fs::read(certs.join("server.crt")).unwrap();
    server.write_data_file("server.crt", &crt, 0o644).unwrap();
    server
        .write_data_file(
            "server.key",
            &std::fs::read(certs.join("server.key")).unwrap(),
            0o600,
        )
        .unwrap();
    // Over the Unix socket (TCP without TLS is rejected): turn TLS on.
    let socket = format!(
        "host={} port={} user=postgres dbname=postgres",
        server.socket_dir().display(),
        server.port()
    );
    sql(&socket, "ALTER SYSTEM SET ssl = on");
    sql(&socket, "SELECT pg_reload_conf()");
    let mut admin = connect(&socket);
    for _ in 0..100 {
        let on: String = admin.query_one("SHOW ssl", &[]).unwrap().get(0);
        if on == "on" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let port = server.port();
    let root = certs.join("server.crt");
    let root = root.display();
    let empty_home = home.path().join("nohome");
    std::fs::create_dir_all(&empty_home).unwrap();
    let steep_tls = |conn: &str| {
        let mut c = steep(home.path());
        c.env("HOME", &empty_home)
            .args(["version", "--json", "-c", conn]);
        c
    };

    // The library client negotiates TLS for require and the server sees an encrypted session.
    let no_vars = |_: &str| None;
    let p = ConnParams::parse(&format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require"
    ))
    .unwrap()
    .resolve(&Environment {
        var: &no_vars,
        os_user: Some(("postgres".into(), empty_home.clone())),
    })
    .unwrap();
    let mut c = steep::cli::client::connect(&p).unwrap();
    let ssl: bool = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl);

    for mode in ["require", "prefer"] {
        ok(&mut steep_tls(&format!(
            "host=127.0.0.1 port={port} user=postgres sslmode={mode}"
        )));
    }
    ok(&mut steep_tls(&format!(
        "host=127.0.0.1 port={port} user=postgres sslmode=verify-ca sslrootcert={root}"
    )));
    ok(&mut steep_tls(&format!(
        "postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={root}"
    )));
    // The certificate names localhost, not 127.0.0.1.
    let err = fails(
        &mut steep_tls(&format!(
            "host=127.0.0.1 port={port} user=postgres sslmode=verify-full sslrootcert={root}"
        )),
        1,
    );
    assert!(err.contains("certificate verification failed"), "{err}");
    let err = fails(
        &mut steep_tls(&format!(
            "host=127.0.0.1 port={port} user=postgres sslmode=verify-full"
        )),
        1,
    );
    assert!(err.contains("needs a root certificate"), "{err}");
    let err = fails(
        &mut steep_tls(&format!(
            "host=127.0.0.1 port={port} user=postgres sslmode=disable"
        )),
        1,
    );
    assert!(err.contains("pg_hba.conf"), "{err}");

    // Replication connections (the engine's own protocol client) speak TLS too: the server
    // takes none without it. A slot with an exported snapshot, over verify-full.
    let replication_check = |conn: &str| -> serde_json::Value {
        let mut c = steep(home.path());
        c.env("HOME", &empty_home)
            .args(["doctor", "--json", "-c", conn]);
        let out = c.output().unwrap();
        let d = json(&stdout(&out));
        d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "replication connection")
            .cloned()
            .unwrap_or_else(|| panic!("no replication connection check: {d}"))
    };
    let full = format!(
        "postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={root}"
    );
    let check = replication_check(&full);
    assert_eq!(check["level"], "ok", "{check}");
    // verify-ca checks the certificate, not the host name (127.0.0.1 is not in it).
    let check = replication_check(&format!(
        "host=127.0.0.1 port={port} user=postgres sslmode=verify-ca sslrootcert={root}"
    ));
    assert_eq!(check["level"], "ok", "{check}");
    steep::cli::client::install_replication_tls();
    let p = ConnParams::parse(&full)
        .unwrap()
        .resolve(&Environment {
            var: &no_vars,
            os_user: Some(("postgres".into(), empty_home.clone())),
        })
        .unwrap();
    // verify-full checks the host name on this path too.
    let by_ip = ConnParams::parse(&format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={root}"
    ))
    .unwrap();
    let err = steep::engine::replication::slot::create(&by_ip, "never", true)
        .err()
        .expect("a host name the certificate does not name is refused");
    assert!(
        format!("{err:#}").contains("certificate verify failed"),
        "{err:#}"
    );
    let created = steep::engine::replication::slot::create(&p, "over_tls", true).unwrap();
    assert!(created.snapshot.is_some());
    drop(created);
    let mut c = steep::cli::client::connect(&p).unwrap();
    steep::engine::replication::slot::drop_one(&mut c, "over_tls").unwrap();
}
