//! A private local endpoint through which pg_dump and pg_restore reach the server as the job's
//! own sessions.
//!
//! In direct mode the engine cannot authenticate as the job's owner (it has no password of
//! theirs), so its connections authenticate as `steep_repl.worker_conninfo` says and then put
//! themselves under PostgreSQL's security-restricted operation with the owner's user id (see
//! `Connect::connect_wire`). pg_dump and pg_restore are libpq programs that open connections of
//! their own; this proxy lets them use exactly such restricted sessions: it listens on a Unix
//! socket in a directory only this OS user can enter, answers each client's startup itself, opens
//! a restricted engine session for it, replays that session's startup report (ParameterStatus,
//! BackendKeyData) and then relays bytes both ways, untouched. pg_restore's SQL therefore runs in
//! a session where `SET ROLE`, `RESET ROLE` and `SET SESSION AUTHORIZATION` are refused and
//! `current_user` is the owner — whatever the archive contains.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::engine::private_dir::PrivateDir;
use crate::engine::wire::{CancelToken, RawStream};
use crate::engine::Connect;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
/// The port number in the socket's name (`.s.PGSQL.<port>`); any number works for a private
/// directory.
pub const PORT: u16 = 5432;

/// Live relayed sessions, by number: their sockets (to unblock the relays when the proxy stops)
/// and cancel tokens (to stop what their backends run). Once `stopped`, a session that arrives
/// late closes itself at once.
#[derive(Default)]
struct Registry {
    next: u64,
    stopped: bool,
    sessions: Vec<Live>,
}

struct Live {
    n: u64,
    sockets: [RawStream; 2],
    cancel: Option<CancelToken>,
}

/// How long a client may take to send its startup packet.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `f` with a proxy listening; `f` gets the directory to use as libpq's `host`. Every
/// session the proxy opened is cancelled and closed when `f` returns.
pub fn with_proxy<T>(upstream: &dyn Connect, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let dir = PrivateDir::new("steep-session")?;
    let socket = dir.path().join(format!(".s.PGSQL.{PORT}"));
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    listener.set_nonblocking(true)?;
    let stop = AtomicBool::new(false);
    let registry = Mutex::new(Registry::default());
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let (registry, first_error) = (&registry, &first_error);
                        s.spawn(move || {
                            if let Err(e) = serve(client, upstream, registry) {
                                first_error
                                    .lock()
                                    .expect("proxy error")
                                    .get_or_insert(format!("{e:#}"));
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let r = f(dir.path());
        stop.store(true, Ordering::Relaxed);
        let live = {
            let mut reg = registry.lock().expect("proxy registry");
            reg.stopped = true;
            std::mem::take(&mut reg.sessions)
        };
        // Sessions still open (the program was stopped mid-statement): stop their statements,
        // then close them so the relays end.
        for l in &live {
            if let Some(c) = &l.cancel {
                let _ = c.cancel();
            }
            for s in &l.sockets {
                s.shutdown();
            }
        }
        r
    });
    match (result, first_error.into_inner().expect("proxy error")) {
        (Err(e), Some(p)) => Err(e.context(format!("(the session proxy: {p})"))),
        (r, _) => r,
    }
}

fn read_i32(r: &mut impl Read) -> Result<i32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(i32::from_be_bytes(b))
}

/// A backend message: type byte, length, body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 5);
    m.push(kind);
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn fatal(message_text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "08006"),
        (b'M', message_text),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

fn serve(mut client: UnixStream, upstream: &dyn Connect, registry: &Mutex<Registry>) -> Result<()> {
    client.set_read_timeout(Some(STARTUP_TIMEOUT))?;
    // The startup packet, after refusing encryption requests (the socket is private).
    let startup = loop {
        let len = read_i32(&mut client)?;
        if !(8..=10_000).contains(&len) {
            bail!("invalid startup packet length {len}");
        }
        let mut body = vec![0u8; len as usize - 4];
        client.read_exact(&mut body)?;
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        match code {
            SSL_REQUEST | GSSENC_REQUEST => client.write_all(b"N")?,
            CANCEL_REQUEST if body.len() >= 12 => {
                let pid = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                let key = i32::from_be_bytes([body[8], body[9], body[10], body[11]]);
                let token = registry
                    .lock()
                    .expect("proxy registry")
                    .sessions
                    .iter()
                    .filter_map(|l| l.cancel.as_ref())
                    .find(|t| t.is(pid, key))
                    .cloned();
                if let Some(t) = token {
                    t.cancel()?;
                }
                return Ok(());
            }
            _ => break body,
        }
    };
    let version = i32::from_be_bytes([startup[0], startup[1], startup[2], startup[3]]);
    if version >> 16 != 3 {
        client.write_all(&fatal("unsupported frontend protocol"))?;
        bail!(
            "a client asked for protocol {}.{}",
            version >> 16,
            version & 0xffff
        );
    }
    let w = match upstream
        .connect_wire()
        .and_then(|w| w.ok_or_else(|| anyhow!("the server needs TLS or GSSAPI, which the session proxy does not relay: point steep_repl.worker_conninfo at a Unix socket")))
    {
        Ok(w) => w,
        Err(e) => {
            let text = format!("{e:#}");
            let _ = client.write_all(&fatal(&text));
            return Err(e);
        }
    };
    let mut hello = Vec::new();
    if version & 0xffff != 0 {
        // We speak 3.0, like the session behind us: say so (NegotiateProtocolVersion).
        let options: Vec<&[u8]> = startup[4..]
            .split(|b| *b == 0)
            .step_by(2)
            .filter(|k| k.starts_with(b"_pq_."))
            .collect();
        let mut body = Vec::new();
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&(options.len() as i32).to_be_bytes());
        for o in options {
            body.extend_from_slice(o);
            body.push(0);
        }
        hello.extend(message(b'v', &body));
    }
    hello.extend(message(b'R', &0i32.to_be_bytes()));
    for (k, v) in &w.server_params {
        // The session's own report describes the login role; the restricted session acts as the
        // owner, which is what the program must plan for (pg_dump, for one, skips what only a
        // superuser may read).
        let v = match k.as_str() {
            "is_superuser" => {
                if w.acts_as_superuser {
                    "on"
                } else {
                    "off"
                }
            }
            _ => v.as_str(),
        };
        let mut body = Vec::new();
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
        hello.extend(message(b'S', &body));
    }
    if let Some((pid, key)) = w.backend_key {
        let mut body = pid.to_be_bytes().to_vec();
        body.extend_from_slice(&key.to_be_bytes());
        hello.extend(message(b'K', &body));
    }
    hello.extend(message(b'Z', b"I"));
    client.write_all(&hello)?;

    let token = w.cancel_token();
    let (up, pending) = w.into_stream()?;
    client.set_read_timeout(None)?;
    client.write_all(&pending)?;
    let client = RawStream::Unix(client);
    let n = {
        let mut reg = registry.lock().expect("proxy registry");
        if reg.stopped {
            // The program is being stopped: no new session.
            client.shutdown();
            up.shutdown();
            return Ok(());
        }
        reg.next += 1;
        let n = reg.next;
        reg.sessions.push(Live {
            n,
            sockets: [client.try_clone()?, up.try_clone()?],
            cancel: token,
        });
        n
    };
    let (mut c_read, mut c_write) = (client.try_clone()?, client);
    let (mut u_read, mut u_write) = (up.try_clone()?, up);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = std::io::copy(&mut u_read, &mut c_write);
            c_write.shutdown();
        });
        let _ = std::io::copy(&mut c_read, &mut u_write);
        u_write.shutdown();
    });
    let gone = {
        let mut reg = registry.lock().expect("proxy registry");
        let i = reg.sessions.iter().position(|l| l.n == n);
        i.map(|i| reg.sessions.remove(i))
    };
    // The client went away (pg_restore ended, or was killed mid-statement): a backend notices a
    // closed socket only when it next reads or writes, so stop whatever it still runs. A cancel
    // request to an idle or finished backend does nothing.
    if let Some(Some(t)) = gone.map(|l| l.cancel) {
        let _ = t.cancel();
    }
    Ok(())
}
