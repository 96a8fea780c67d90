//! A small blocking PostgreSQL wire-protocol connection for the engine's hot path, COPY out.
//!
//! The `postgres` crate delivers COPY data one message (one row) at a time through its async
//! runtime, which costs more per row than reading and writing the row. This connection parses the
//! same messages (with `postgres-protocol`) straight out of one large read buffer. It handles what
//! the engine's connections use: TCP or Unix sockets, trust, password, MD5 and SCRAM-SHA-256
//! authentication, simple queries and COPY out. Anything else (TLS, GSSAPI) makes `connect` return
//! None and the engine uses the `postgres` crate instead, exactly as before. Replication
//! connections (`connect_replication`: the walsender's commands, which the `postgres` crate cannot
//! send) also speak TLS, through the `TlsUpgrade` the binary installs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;

use crate::conn::ConnParams;
use crate::db_error::{db_error, ServerError};

/// The socket under a connection: Unix or TCP, either of which can be split into a reading and
/// a writing half (the session proxy relays both directions at once), or TLS over TCP (which
/// cannot: replication connections only).
pub enum RawStream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<dyn TlsStream>),
}

/// An encrypted stream, made by the `TlsUpgrade` the binary installs.
pub trait TlsStream: Read + Write + Send {}

impl<T: Read + Write + Send> TlsStream for T {}

/// Turns a TCP connection on which the server agreed to TLS into a TLS stream, honouring the
/// connection's sslmode, sslrootcert, sslcert/sslkey, sslsni and protocol bounds as libpq does.
/// The library has no TLS of its own (the extension needs none): the `steep` binary installs
/// one with `set_tls`.
pub trait TlsUpgrade: Send + Sync {
    fn upgrade(&self, p: &ConnParams, host: &str, tcp: TcpStream) -> Result<Box<dyn TlsStream>>;
}

static TLS: std::sync::OnceLock<Box<dyn TlsUpgrade>> = std::sync::OnceLock::new();

/// Install how replication connections speak TLS (once per process).
pub fn set_tls(t: Box<dyn TlsUpgrade>) {
    let _ = TLS.set(t);
}

impl RawStream {
    pub fn try_clone(&self) -> std::io::Result<RawStream> {
        Ok(match self {
            RawStream::Unix(s) => RawStream::Unix(s.try_clone()?),
            RawStream::Tcp(s) => RawStream::Tcp(s.try_clone()?),
            RawStream::Tls(_) => {
                return Err(std::io::Error::other("a TLS connection cannot be relayed"))
            }
        })
    }

    pub fn shutdown(&self) {
        let _ = match self {
            RawStream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            RawStream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            // Closed when dropped.
            RawStream::Tls(_) => Ok(()),
        };
    }
}

impl Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Unix(s) => s.read(buf),
            RawStream::Tcp(s) => s.read(buf),
            RawStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for RawStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Unix(s) => s.write(buf),
            RawStream::Tcp(s) => s.write(buf),
            RawStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            RawStream::Unix(s) => s.flush(),
            RawStream::Tcp(s) => s.flush(),
            RawStream::Tls(s) => s.flush(),
        }
    }
}

const READ_CHUNK: usize = 256 * 1024;

pub struct Wire {
    stream: RawStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// What the server reported at startup (ParameterStatus), in order.
    pub server_params: Vec<(String, String)>,
    /// The server's BackendKeyData (process id, secret key), for cancel requests.
    pub backend_key: Option<(i32, i32)>,
    /// Whether the role the session acts as is a superuser (is_superuser at startup; the
    /// caller updates it when it changes who the session acts as).
    pub acts_as_superuser: bool,
    /// Where the server was reached, for cancel requests.
    endpoint: Endpoint,
    /// Handed on by `into_stream`: dropping this must not end the session.
    relayed: bool,
}

#[derive(Clone, Debug)]
enum Endpoint {
    Unix(String),
    Tcp(String, u16),
}

/// A cancel request for a connection's backend, sent on a connection of its own like libpq's
/// PQcancel.
#[derive(Clone, Debug)]
pub struct CancelToken {
    endpoint: Endpoint,
    pid: i32,
    key: i32,
}

impl CancelToken {
    pub fn is(&self, pid: i32, key: i32) -> bool {
        self.pid == pid && self.key == key
    }

    pub fn cancel(&self) -> Result<()> {
        let mut b = BytesMut::new();
        frontend::cancel_request(self.pid, self.key, &mut b);
        let mut s = match &self.endpoint {
            Endpoint::Unix(p) => RawStream::Unix(UnixStream::connect(p)?),
            Endpoint::Tcp(h, port) => RawStream::Tcp(TcpStream::connect((h.as_str(), *port))?),
        };
        s.write_all(&b)?;
        // The server closes the connection once it has read the request.
        let _ = s.read(&mut [0u8; 1]);
        Ok(())
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        if self.relayed {
            return;
        }
        let mut b = BytesMut::new();
        frontend::terminate(&mut b);
        let _ = self.stream.write_all(&b);
    }
}

/// An ErrorResponse as the same typed error the `postgres` crate path gives (SQLSTATE kept).
fn error_text(body: &ErrorResponseBody) -> ServerError {
    let mut fields = body.fields();
    let (mut msg, mut detail, mut hint, mut code) = (String::new(), None, None, String::new());
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => msg = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'D' => detail = Some(String::from_utf8_lossy(f.value_bytes()).into_owned()),
            b'H' => hint = Some(String::from_utf8_lossy(f.value_bytes()).into_owned()),
            _ => {}
        }
    }
    ServerError {
        code,
        text: crate::db_error::one_line(&msg, detail.as_deref(), hint.as_deref()),
    }
}

/// libpq asks a TCP server for TLS unless sslmode=disable, and uses it when offered: here for a
/// replication connection when the binary installed TLS; otherwise None (the `postgres` crate's
/// path speaks it). A refusal is an error when sslmode requires TLS.
fn negotiate_tls(
    mut stream: RawStream,
    p: &ConnParams,
    host: &str,
    sslmode: &str,
    replication: bool,
) -> Result<Option<RawStream>> {
    let tls = TLS.get().filter(|_| replication);
    if replication && tls.is_none() && matches!(sslmode, "allow" | "prefer") {
        // This process speaks no TLS (a server-side job) and the connection may go without.
        return Ok(Some(stream));
    }
    if tls.is_some() && sslmode == "verify-full" && p.get("host").is_none_or(|h| h.is_empty()) {
        bail!(
            "sslmode=verify-full checks the server's name, and only hostaddr is given: give host \
             (the name in the server's certificate) too"
        );
    }
    let mut b = BytesMut::new();
    frontend::ssl_request(&mut b);
    stream.write_all(&b)?;
    stream.flush()?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer)?;
    match (answer[0], tls, stream) {
        (b'S', Some(tls), RawStream::Tcp(tcp)) => {
            Ok(Some(RawStream::Tls(tls.upgrade(p, host, tcp)?)))
        }
        (b'S', _, _) => Ok(None),
        (_, _, _) if matches!(sslmode, "require" | "verify-ca" | "verify-full") => bail!(
            "the server at {} does not support TLS, which sslmode={sslmode} requires: use \
             sslmode=prefer or disable, or enable ssl on the server",
            p.endpoint()
        ),
        (_, _, s) => Ok(Some(s)),
    }
}

impl Wire {
    /// Connect with `p` (already resolved: host, port, user, dbname, password...). None when this
    /// connection needs what only the `postgres` crate path provides (TLS, GSSAPI).
    pub fn connect(p: &ConnParams) -> Result<Option<Wire>> {
        Self::connect_as(p, false)
    }

    /// A logical replication connection (`replication=database`) to `p`'s database: the walsender
    /// protocol's commands (CREATE_REPLICATION_SLOT ...) and plain SQL. Replication connections
    /// are admitted by pg_hba.conf lines naming the database (not the `replication` keyword).
    pub fn connect_replication(p: &ConnParams) -> Result<Option<Wire>> {
        Self::connect_as(p, true)
    }

    fn connect_as(p: &ConnParams, replication: bool) -> Result<Option<Wire>> {
        let host = p
            .get("host")
            .unwrap_or("localhost")
            .split(',')
            .next()
            .unwrap_or("localhost")
            .trim()
            .to_string();
        let port: u16 = p
            .get("port")
            .unwrap_or("5432")
            .split(',')
            .next()
            .unwrap_or("5432")
            .trim()
            .parse()
            .map_err(|_| anyhow!("invalid port"))?;
        let timeout = p.connect_timeout()?;
        let sslmode = p.get("sslmode").unwrap_or("prefer");
        // As libpq: a hostaddr wins over host (which then only names the server for TLS and
        // .pgpass), even when host is a socket directory.
        let hostaddr = p
            .get("hostaddr")
            .and_then(|h| h.split(',').next())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        let (stream, endpoint) = if host.starts_with('/') && hostaddr.is_none() {
            let path = format!("{host}/.s.PGSQL.{port}");
            (
                RawStream::Unix(
                    UnixStream::connect(&path).with_context(|| format!("connecting to {path}"))?,
                ),
                Endpoint::Unix(path),
            )
        } else {
            // Replication connections speak TLS themselves (when the binary installed it); the
            // fast COPY path leaves TLS to the `postgres` crate.
            let tls_here = replication && TLS.get().is_some();
            if matches!(sslmode, "require" | "verify-ca" | "verify-full") && !tls_here {
                return Ok(None);
            }
            let addr = hostaddr.unwrap_or(host.clone());
            let s = match timeout {
                Some(t) => {
                    let sa = std::net::ToSocketAddrs::to_socket_addrs(&(addr.as_str(), port))?
                        .next()
                        .ok_or_else(|| anyhow!("cannot resolve {addr}"))?;
                    TcpStream::connect_timeout(&sa, t)?
                }
                None => TcpStream::connect((addr.as_str(), port))?,
            };
            s.set_nodelay(true)?;
            (RawStream::Tcp(s), Endpoint::Tcp(addr, port))
        };
        let tcp = matches!(endpoint, Endpoint::Tcp(..));
        let stream = if tcp && sslmode != "disable" {
            match negotiate_tls(stream, p, &host, sslmode, replication)? {
                Some(s) => s,
                None => return Ok(None),
            }
        } else {
            stream
        };
        let mut w = Wire {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK * 2),
            wbuf: BytesMut::new(),
            server_params: Vec::new(),
            backend_key: None,
            acts_as_superuser: false,
            endpoint,
            relayed: false,
        };
        let user = p.get("user").unwrap_or("postgres").to_string();
        let mut startup: Vec<(&str, &str)> = vec![
            ("user", user.as_str()),
            ("database", p.get("dbname").unwrap_or(&user)),
            (
                "application_name",
                p.get("application_name").unwrap_or("steep"),
            ),
            ("client_encoding", "UTF8"),
        ];
        if let Some(o) = p.get("options") {
            startup.push(("options", o));
        }
        if replication {
            startup.push(("replication", "database"));
        }
        frontend::startup_message(startup.iter().copied(), &mut w.wbuf)?;
        w.flush()?;
        let password = p.get("password").unwrap_or("").as_bytes().to_vec();
        let mut scram: Option<ScramSha256> = None;
        loop {
            match w.next()? {
                Message::AuthenticationOk => break,
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&password, &mut w.wbuf)?;
                    w.flush()?;
                }
                Message::AuthenticationMd5Password(b) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        &password,
                        b.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut w.wbuf)?;
                    w.flush()?;
                }
                Message::AuthenticationSasl(b) => {
                    let mut mechs = b.mechanisms();
                    let mut ok = false;
                    while let Some(m) = mechs.next()? {
                        ok |= m == SCRAM_SHA_256;
                    }
                    if !ok {
                        return Ok(None);
                    }
                    let s = ScramSha256::new(&password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut w.wbuf)?;
                    w.flush()?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(b) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| anyhow!("unexpected SASL message"))?;
                    s.update(b.data())?;
                    frontend::sasl_response(s.message(), &mut w.wbuf)?;
                    w.flush()?;
                }
                Message::AuthenticationSaslFinal(b) => {
                    scram
                        .as_mut()
                        .ok_or_else(|| anyhow!("unexpected SASL message"))?
                        .finish(b.data())?;
                }
                Message::ErrorResponse(e) => return Err(error_text(&e).into()),
                Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationKerberosV5 => return Ok(None),
                _ => {}
            }
        }
        loop {
            match w.next()? {
                Message::ReadyForQuery(_) => return Ok(Some(w)),
                Message::ErrorResponse(e) => return Err(error_text(&e).into()),
                Message::ParameterStatus(p) => {
                    if p.name()? == "is_superuser" {
                        w.acts_as_superuser = p.value()? == "on";
                    }
                    w.server_params
                        .push((p.name()?.to_string(), p.value()?.to_string()));
                }
                Message::BackendKeyData(k) => {
                    w.backend_key = Some((k.process_id(), k.secret_key()));
                }
                _ => {}
            }
        }
    }

    /// How to cancel what this connection's backend is running.
    pub fn cancel_token(&self) -> Option<CancelToken> {
        self.backend_key.map(|(pid, key)| CancelToken {
            endpoint: self.endpoint.clone(),
            pid,
            key,
        })
    }

    /// The socket and the bytes already read from it but not parsed, for relaying the
    /// connection as it stands (between statements). The connection is not terminated.
    pub fn into_stream(mut self) -> Result<(RawStream, Vec<u8>)> {
        let pending = self.rbuf.split().to_vec();
        // A second descriptor of the same socket: dropping `self` closes only its own.
        let stream = self.stream.try_clone()?;
        self.relayed = true;
        Ok((stream, pending))
    }

    fn flush(&mut self) -> Result<()> {
        self.stream.write_all(&self.wbuf)?;
        self.stream.flush()?;
        self.wbuf.clear();
        Ok(())
    }

    fn next(&mut self) -> Result<Message> {
        loop {
            if let Some(m) = Message::parse(&mut self.rbuf)? {
                return Ok(m);
            }
            let start = self.rbuf.len();
            self.rbuf.resize(start + READ_CHUNK, 0);
            let n = self.stream.read(&mut self.rbuf[start..])?;
            self.rbuf.truncate(start + n);
            if n == 0 {
                bail!("the server closed the connection");
            }
        }
    }

    /// Run SQL (one or more statements); rows are discarded.
    pub fn simple(&mut self, sql: &str) -> Result<()> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush()?;
        let mut err = None;
        loop {
            match self.next()? {
                Message::ErrorResponse(e) => err = Some(error_text(&e)),
                Message::ReadyForQuery(_) => return err.map_or(Ok(()), |e| Err(e.into())),
                _ => {}
            }
        }
    }

    /// Run one query and return the first column of its first row (None for no row or NULL).
    pub fn query_value(&mut self, sql: &str) -> Result<Option<String>> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush()?;
        let (mut err, mut value) = (None, None);
        loop {
            match self.next()? {
                Message::DataRow(r) if value.is_none() => {
                    let buf = r.buffer();
                    if let Some(Some(range)) = r.ranges().next()? {
                        value = Some(String::from_utf8_lossy(&buf[range]).into_owned());
                    }
                }
                Message::ErrorResponse(e) => err = Some(error_text(&e)),
                Message::ReadyForQuery(_) => {
                    return err.map_or(Ok(value), |e| Err(e.into()));
                }
                _ => {}
            }
        }
    }

    /// Run one statement (SQL or, on a replication connection, a replication command) and return
    /// its rows as text (None for NULL).
    pub fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush()?;
        let (mut err, mut rows) = (None, Vec::new());
        loop {
            match self.next()? {
                Message::DataRow(r) => {
                    let buf = r.buffer();
                    let mut row = Vec::new();
                    let mut ranges = r.ranges();
                    while let Some(range) = ranges.next()? {
                        row.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Message::ErrorResponse(e) => err = Some(error_text(&e)),
                Message::ReadyForQuery(_) => return err.map_or(Ok(rows), |e| Err(e.into())),
                _ => {}
            }
        }
    }

    /// Run a `COPY ... TO STDOUT`, handing each piece of data to `sink` as it arrives. An error
    /// from `sink` stops reading; the connection is then unusable and must be dropped.
    pub fn copy_out(&mut self, sql: &str, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush()?;
        let mut err = None;
        loop {
            match self.next()? {
                Message::CopyData(d) if err.is_none() => sink(d.data())?,
                Message::ErrorResponse(e) => err = Some(error_text(&e)),
                Message::ReadyForQuery(_) => return err.map_or(Ok(()), |e| Err(e.into())),
                _ => {}
            }
        }
    }
}

/// A connection the engine reads through: the fast path when possible, else the `postgres` crate.
pub enum Session {
    Wire(Wire),
    Pg(Box<postgres::Client>),
}

impl Session {
    /// How to cancel this session's running statement.
    pub fn canceller(&self) -> Option<crate::engine::counters::Canceller> {
        match self {
            Session::Wire(w) => {
                let token = w.cancel_token()?;
                Some(Box::new(move || {
                    let _ = token.cancel();
                }))
            }
            Session::Pg(c) => Some(crate::engine::counters::pg_canceller(c)),
        }
    }

    pub fn simple(&mut self, sql: &str) -> Result<()> {
        match self {
            Session::Wire(w) => w.simple(sql),
            Session::Pg(c) => c.batch_execute(sql).map_err(db_error),
        }
    }

    pub fn copy_out(&mut self, sql: &str, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        match self {
            Session::Wire(w) => w.copy_out(sql, sink),
            Session::Pg(c) => {
                use std::io::BufRead;
                let mut r = c.copy_out(sql).map_err(db_error)?;
                loop {
                    let buf = r.fill_buf()?;
                    if buf.is_empty() {
                        return Ok(());
                    }
                    sink(buf)?;
                    let n = buf.len();
                    r.consume(n);
                }
            }
        }
    }
}
