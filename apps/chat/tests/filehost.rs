//! File sharing (`soju.im/FILEHOST`) on the WebSocket listener: uploads with
//! an account's Basic credentials, downloads byte for byte with safe
//! headers, and every refusal — no or wrong credentials (401), no length
//! (411), over the size limit or the quota (413, nothing left on disk), path
//! tricks (400/404), a stalled or abandoned body (deleted). ISUPPORT
//! advertises the URL only when the file host is on. Both backends, 1 and 4
//! shards.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use common::{test_config, Client, TempDir, TestServer, SHARD_COUNTS, WAIT};
use shardline::Io;
use shardline_chat::{config::Registration, Config};

const PASSWORD: &str = "correct horse battery";

/// A server with a WebSocket listener, open registration and a data
/// directory of the test's own (to look at the files).
fn each_filehost(
    io: Io,
    configure: impl Fn(&mut Config),
    mut test: impl FnMut(&TestServer, &Path),
) {
    for shards in SHARD_COUNTS {
        let dir = TempDir::new("filehost");
        let mut c = test_config();
        c.websocket.listen = vec!["127.0.0.1:0".parse().expect("literal")];
        c.accounts.test_cheap_hashes = true;
        c.accounts.registration = Registration::Open;
        c.storage.dir = Some(dir.0.clone());
        configure(&mut c);
        let srv = TestServer::start_with(io, shards, c);
        test(&srv, &dir.0);
        srv.stop();
    }
}

fn ws_addr(srv: &TestServer) -> SocketAddr {
    srv.local_addrs()[1]
}

/// Registers account `name` (over IRC, on shard `shard`).
fn make_account(srv: &TestServer, shard: usize, name: &str) {
    let mut c = srv.connect_on(shard);
    c.send(&format!("NICK {name}"));
    c.send(&format!("REGISTER {name} * :{PASSWORD}"));
    let (l, _) = c.until("REGISTER", |l| l.is("REGISTER") || l.is("FAIL"));
    assert!(l.is("REGISTER"), "{}: {}", srv.label(), l.raw);
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// An HTTP response: status, headers (names lowercased), body.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn read_response(s: &mut TcpStream) -> Resp {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).expect("ascii head");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status")[9..12].parse().expect("code");
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").expect("header");
            (n.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// Sends `head` (request line and headers, without the final empty line)
/// and `body`, reads the response to the end.
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(format!("{head}\r\n\r\n").as_bytes())
        .expect("head");
    // The server may answer (and stop reading) before the body is all sent.
    let _ = s.write_all(body);
    read_response(&mut s)
}

fn upload(addr: SocketAddr, auth: Option<&str>, name: &str, body: &[u8]) -> Resp {
    let mut head = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
         Content-Disposition: attachment; filename=\"{name}\"",
        body.len()
    );
    if let Some(a) = auth {
        head.push_str(&format!("\r\nAuthorization: {a}"));
    }
    request(addr, &head, body)
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}"), b"")
}

/// The path part of a Location.
fn path_of(srv: &TestServer, location: &str) -> String {
    let base = format!("http://{}", ws_addr(srv));
    location
        .strip_prefix(&base)
        .unwrap_or_else(|| panic!("{location} not under {base}"))
        .to_string()
}

/// Bytes that are not all the same (and not text).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 7) as u8).collect()
}

/// The entries of `<data>/files` (ids) and of its temporary directory.
fn on_disk(data: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let list = |p: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|d| d.map(|e| e.expect("entry").path()).collect())
            .unwrap_or_default()
    };
    let files = data.join("files");
    let ids = list(files.clone())
        .into_iter()
        .filter(|p| !p.ends_with(".tmp"))
        .collect();
    (ids, list(files.join(".tmp")))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn isupport(srv: &TestServer, nick: &str) -> Vec<String> {
    let mut c: Client = srv.connect_on(0);
    c.send(&format!("NICK {nick}"));
    c.send(&format!("USER {nick} 0 * :{nick}"));
    let (_, before) = c.until("end of 005", |l| l.is("375") || l.is("422"));
    before
        .iter()
        .filter(|l| l.is("005"))
        .flat_map(|l| l.params[1..l.params.len() - 1].to_vec())
        .collect()
}

fn upload_and_download(io: Io) {
    each_filehost(
        io,
        |_| {},
        |srv, data| {
            let label = srv.label();
            let addr = ws_addr(srv);
            let tokens = isupport(srv, "watcher");
            let want = format!("soju.im/FILEHOST=http://{addr}/upload");
            assert!(tokens.contains(&want), "{label}: {tokens:?}");
            make_account(srv, srv.shards - 1, "alice");
            let auth = basic("alice", PASSWORD);
            let text = b"hello, files\n".to_vec();
            let big = pattern(5 << 20);
            let html = b"<script>alert(1)</script>".to_vec();
            for (name, body, ctype) in [
                ("note.txt", &text, "text/plain; charset=utf-8"),
                ("big.bin", &big, "application/octet-stream"),
                ("page.html", &html, "application/octet-stream"),
                ("../../evil.png", &text, "image/png"),
            ] {
                let r = upload(addr, Some(&auth), name, body);
                assert_eq!(
                    r.status,
                    201,
                    "{label} {name}: {:?}",
                    String::from_utf8_lossy(&r.body)
                );
                let location = r.header("location").expect("Location").to_string();
                let path = path_of(srv, &location);
                assert!(!path.contains(".."), "{label}: {path}");
                // Several times: connections land on different shards.
                for _ in 0..srv.shards {
                    let g = get(addr, &path);
                    assert_eq!(g.status, 200, "{label} {path}");
                    assert!(
                        g.body == *body,
                        "{label} {name}: content differs ({} bytes)",
                        g.body.len()
                    );
                    assert_eq!(g.header("content-type"), Some(ctype), "{label} {name}");
                    assert_eq!(g.header("x-content-type-options"), Some("nosniff"));
                    assert!(g
                        .header("content-security-policy")
                        .is_some_and(|v| v.starts_with("default-src 'none'")));
                    let attachment = g
                        .header("content-disposition")
                        .is_some_and(|v| v.starts_with("attachment"));
                    assert_eq!(
                        attachment,
                        ctype == "application/octet-stream",
                        "{label} {name}"
                    );
                }
            }
            let (ids, tmp) = on_disk(data);
            assert_eq!(ids.len(), 4, "{label}: {ids:?}");
            assert!(ids.iter().all(|p| p.join(".account").exists()), "{label}");
            assert!(tmp.is_empty(), "{label}: {tmp:?}");
            // Expect: 100-continue: the go-ahead comes once the credentials are
            // checked, then the 201.
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(
                format!(
                    "POST /upload HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\n\
                 Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
                )
                .as_bytes(),
            )
            .expect("head");
            let mut go = [0u8; 25];
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            s.read_exact(&mut go).expect("100 Continue");
            assert_eq!(&go, b"HTTP/1.1 100 Continue\r\n\r\n", "{label}");
            s.write_all(b"12345").expect("body");
            let r = read_response(&mut s);
            assert_eq!(r.status, 201, "{label}");
            assert_eq!(
                get(addr, &path_of(srv, r.header("location").expect("Location"))).body,
                b"12345"
            );
            // A reader slower than the file: it still arrives whole.
            let r = upload(addr, Some(&auth), "slow.bin", &big);
            let path = path_of(srv, r.header("location").expect("Location"));
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                .expect("get");
            std::thread::sleep(Duration::from_millis(300));
            let g = read_response(&mut s);
            assert!(g.body == big, "{label}: slow read differs");
        },
    );
}

fn refusals(io: Io) {
    let configure = |c: &mut Config| {
        c.filehost.max_file_bytes = 1 << 20;
        c.filehost.quota_bytes = (5 << 20) / 2;
    };
    each_filehost(io, configure, |srv, data| {
        let label = srv.label();
        let addr = ws_addr(srv);
        make_account(srv, 0, "bob");
        let body = pattern(1000);
        // Credentials.
        for auth in [
            None,
            Some(basic("bob", "wrong password")),
            Some(basic("nobody", PASSWORD)),
            Some("Basic !!".to_string()),
            Some("Bearer x".into()),
        ] {
            let r = upload(addr, auth.as_deref(), "a.txt", &body);
            assert_eq!(r.status, 401, "{label} {auth:?}");
            // The challenge names the scheme that was tried (Basic when none was).
            let scheme = match &auth {
                Some(a) if a.starts_with("Bearer") => "Bearer ",
                _ => "Basic ",
            };
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with(scheme)),
                "{label} {auth:?}"
            );
        }
        let auth = basic("bob", PASSWORD);
        // No length; chunked.
        let r = request(
            addr,
            &format!("POST /upload HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}"),
            b"",
        );
        assert_eq!(r.status, 411, "{label}");
        let r = request(addr, &format!("POST /upload HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked"), b"0\r\n\r\n");
        assert_eq!(r.status, 411, "{label}");
        let r = request(
            addr,
            &format!(
                "POST /upload HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\nContent-Length: -1"
            ),
            b"",
        );
        assert_eq!(r.status, 400, "{label}");
        // Over the size limit: refused up front, nothing on disk.
        let r = upload(addr, Some(&auth), "big.bin", &pattern((1 << 20) + 1));
        assert_eq!(r.status, 413, "{label}");
        assert_eq!(on_disk(data), (vec![], vec![]), "{label}");
        // The quota: two of 1 MiB fit in 2.5 MiB, a third does not.
        let mib = pattern(1 << 20);
        assert_eq!(
            upload(addr, Some(&auth), "1.bin", &mib).status,
            201,
            "{label}"
        );
        let second = upload(addr, Some(&auth), "2.bin", &mib);
        assert_eq!(second.status, 201, "{label}");
        let r = upload(addr, Some(&auth), "3.bin", &mib);
        assert_eq!(r.status, 413, "{label}");
        assert_eq!(on_disk(data).0.len(), 2, "{label}");
        // Path tricks.
        let real = path_of(srv, second.header("location").expect("Location"));
        let id = real.split('/').nth(2).expect("id").to_string();
        for bad in [
            "/files/../../etc/passwd".to_string(),
            "/files/%2e%2e/%2e%2e/etc/passwd".into(),
            format!("/files/{id}/..%2f..%2fetc%2fpasswd"),
            format!("/files/{id}/../{id}/2.bin"),
            format!("/files/{id}/2.bin/x"),
            format!("/files/{id}%2f2.bin"),
            format!("/files/{}/2.bin", id.to_uppercase()),
            format!("/files/{id}/.account"),
            format!("/files/{id}/"),
            "/files//etc/passwd".into(),
            "/files/.tmp/x".into(),
            format!("/files/{id}/2.bin%00.png"),
        ] {
            let r = get(addr, &bad);
            assert!(matches!(r.status, 400 | 404), "{label} {bad}: {}", r.status);
            assert!(r.body.len() < 100, "{label} {bad}");
        }
        assert_eq!(get(addr, &real).body, mib, "{label}");
        let r = request(addr, &format!("DELETE {real} HTTP/1.1\r\nHost: h"), b"");
        assert_eq!(r.status, 405, "{label}");
        // HEAD on a file and OPTIONS on the upload URI (the spec's MUSTs).
        let r = request(addr, &format!("HEAD {real} HTTP/1.1\r\nHost: h"), b"");
        assert_eq!(r.status, 200, "{label}");
        assert_eq!(r.header("content-length"), Some("1048576"), "{label}");
        assert!(r.body.is_empty(), "{label}");
        // HEAD answers never carry a body: a missing file, the web client's
        // files (the same Content-Length as their GET).
        let missing = "/files/00000000000000000000000000000000/x.txt";
        let r = request(addr, &format!("HEAD {missing} HTTP/1.1\r\nHost: h"), b"");
        assert_eq!((r.status, r.body.len()), (404, 0), "{label}");
        for asset in ["/", "/app.js", "/favicon.svg", "/nope"] {
            let g = get(addr, asset);
            let h = request(addr, &format!("HEAD {asset} HTTP/1.1\r\nHost: h"), b"");
            assert_eq!(h.status, g.status, "{label} {asset}");
            assert!(h.body.is_empty(), "{label} HEAD {asset}");
            let length = g.body.len().to_string();
            assert_eq!(
                h.header("content-length"),
                Some(length.as_str()),
                "{label} {asset}"
            );
            assert_eq!(
                h.header("content-type"),
                g.header("content-type"),
                "{label} {asset}"
            );
        }
        assert_eq!(
            get(addr, "/favicon.svg").header("content-type"),
            Some("image/svg+xml")
        );
        let r = request(addr, "OPTIONS /upload HTTP/1.1\r\nHost: h", b"");
        assert_eq!(r.status, 204, "{label}");
        assert!(
            r.header("allow").is_some_and(|v| v.contains("POST")),
            "{label}"
        );
        // The chat is still fine.
        let mut c = srv.register_on(0, "after");
        c.send("PING :x");
        c.expect("PONG");
    });
}

fn stalled_and_cut_uploads(io: Io) {
    let configure = |c: &mut Config| {
        c.websocket.request_timeout_secs = 1;
        c.filehost.quota_bytes = 1 << 20;
    };
    each_filehost(io, configure, |srv, data| {
        let label = srv.label();
        let addr = ws_addr(srv);
        make_account(srv, 0, "carol");
        let auth = basic("carol", PASSWORD);
        let full = pattern(1 << 20);
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: h\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
            full.len()
        );
        // Stalled: 408, the temporary file goes.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&full[..1000]).expect("part");
        wait_until("a temporary file", || on_disk(data).1.len() == 1);
        let r = read_response(&mut s);
        assert_eq!(r.status, 408, "{label}");
        wait_until("the temporary file to go", || on_disk(data).1.is_empty());
        // Cut: the connection closes mid-body.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&full[..1000]).expect("part");
        wait_until("a temporary file", || on_disk(data).1.len() == 1);
        drop(s);
        wait_until("the temporary file to go", || on_disk(data).1.is_empty());
        // Both gave their reservation back: the whole quota is free.
        let r = upload(addr, Some(&auth), "all.bin", &full);
        assert_eq!(r.status, 201, "{label}");
    });
}

fn isupport_only_when_on(io: Io) {
    for (off, how) in [
        (
            &(|c: &mut Config| c.filehost.enabled = Some(false)) as &dyn Fn(&mut Config),
            "disabled",
        ),
        (
            &|c: &mut Config| c.history.enabled = false,
            "no data directory",
        ),
    ] {
        each_filehost(io, off, |srv, _| {
            let tokens = isupport(srv, "watcher");
            assert!(
                !tokens.iter().any(|t| t.starts_with("soju.im/FILEHOST")),
                "{} {how}: {tokens:?}",
                srv.label()
            );
            let r = get(ws_addr(srv), "/files/00000000000000000000000000000000/x");
            assert_eq!(r.status, 404, "{how}");
            let r = upload(ws_addr(srv), Some(&basic("a", "b")), "a", b"a");
            assert_eq!(r.status, 405, "{how}");
            // No file host, no token command.
            let mut c = srv.connect_on(0);
            c.send("NICK tok");
            c.send("USER tok 0 * :tok");
            c.until("welcome", |l| l.is("001"));
            c.send("FILEHOST TOKEN");
            let (l, _) = c.until("421", |l| l.is("421"));
            assert_eq!(l.params[1], "FILEHOST", "{how}");
        });
    }
    // A plaintext listener on another address than loopback is never
    // advertised.
    each_filehost(
        io,
        |c| c.websocket.listen = vec!["0.0.0.0:0".parse().expect("literal")],
        |srv, _| {
            let tokens = isupport(srv, "watcher");
            assert!(
                !tokens.iter().any(|t| t.starts_with("soju.im/FILEHOST")),
                "{}: {tokens:?}",
                srv.label()
            );
        },
    );
}

fn expiry_and_restart(io: Io) {
    for shards in SHARD_COUNTS {
        let dir = TempDir::new("filehost");
        let config = |expire_days: f64| {
            let mut c = test_config();
            c.websocket.listen = vec!["127.0.0.1:0".parse().expect("literal")];
            c.accounts.test_cheap_hashes = true;
            c.accounts.registration = Registration::Open;
            c.storage.dir = Some(dir.0.clone());
            c.filehost.quota_bytes = 1 << 20;
            c.filehost.expire_days = expire_days;
            c
        };
        let part = pattern(600 << 10);
        // A file stored, then the server restarts: the file is still served
        // and still counts against the quota; a leftover temporary file goes.
        let srv = TestServer::start_with(io, shards, config(30.0));
        let label = srv.label();
        make_account(&srv, 0, "dave");
        let auth = basic("dave", PASSWORD);
        let r = upload(ws_addr(&srv), Some(&auth), "kept.bin", &part);
        assert_eq!(r.status, 201, "{label}");
        let kept = path_of(&srv, r.header("location").expect("Location"));
        srv.stop();
        std::fs::write(dir.0.join("files/.tmp/leftover"), b"x").expect("leftover");
        let srv = TestServer::start_with(io, shards, config(30.0));
        let addr = ws_addr(&srv);
        assert_eq!(
            get(addr, &kept).body,
            part,
            "{label}: kept across a restart"
        );
        assert!(
            on_disk(&dir.0).1.is_empty(),
            "{label}: temporary files emptied"
        );
        assert_eq!(
            upload(addr, Some(&auth), "more.bin", &part).status,
            413,
            "{label}: quota rebuilt"
        );
        srv.stop();
        // Expiry: files older than expire_days go (swept on shard 0), and so
        // does their share of the quota.
        let srv = TestServer::start_with(io, shards, config(2.0 / 86_400.0));
        let addr = ws_addr(&srv);
        wait_until("the old file to expire", || get(addr, &kept).status == 404);
        let r = upload(addr, Some(&auth), "new.bin", &part);
        assert_eq!(r.status, 201, "{label}: quota given back");
        let new = path_of(&srv, r.header("location").expect("Location"));
        assert_eq!(get(addr, &new).status, 200, "{label}");
        wait_until("the new file to expire", || get(addr, &new).status == 404);
        wait_until("the directory to empty", || on_disk(&dir.0).0.is_empty());
        srv.stop();
    }
}

fn concurrent_uploads_share_one_quota(io: Io) {
    let configure = |c: &mut Config| c.filehost.quota_bytes = 1 << 20;
    each_filehost(io, configure, |srv, data| {
        let label = srv.label();
        let addr = ws_addr(srv);
        make_account(srv, 0, "erin");
        let auth = basic("erin", PASSWORD);
        // Eight uploads of 300 KiB at once, spread over the shards: the
        // quota holds three, and exactly three are stored.
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let auth = auth.clone();
                std::thread::spawn(move || {
                    upload(addr, Some(&auth), &format!("{i}.bin"), &pattern(300 << 10)).status
                })
            })
            .collect();
        let mut statuses: Vec<u16> = threads
            .into_iter()
            .map(|t| t.join().expect("uploader"))
            .collect();
        statuses.sort();
        assert_eq!(
            statuses,
            [201, 201, 201, 413, 413, 413, 413, 413],
            "{label}"
        );
        let (ids, tmp) = on_disk(data);
        assert_eq!((ids.len(), tmp.len()), (3, 0), "{label}");
    });
}

/// A receive buffer of about `bytes` on `s` (so the kernel cannot take a
/// whole file off the server's hands).
fn small_receive_buffer(s: &TcpStream, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
}

fn slow_download_is_paced_not_cut(io: Io) {
    let configure = |c: &mut Config| {
        c.websocket.request_timeout_secs = 1;
        // A small send queue: the file goes out as the reader drains it.
        c.limits.sendq_bytes = 256 << 10;
    };
    each_filehost(io, configure, |srv, _| {
        let label = srv.label();
        let addr = ws_addr(srv);
        make_account(srv, 0, "fay");
        let big = pattern(6 << 20);
        let r = upload(addr, Some(&basic("fay", PASSWORD)), "big.bin", &big);
        assert_eq!(r.status, 201, "{label}");
        let path = path_of(srv, r.header("location").expect("Location"));
        // Slower than request_timeout_secs, but always reading: not cut.
        let mut s = TcpStream::connect(addr).expect("connect");
        small_receive_buffer(&s, 16 << 10);
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
            .expect("get");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let started = Instant::now();
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            std::thread::sleep(Duration::from_millis(6));
        }
        let got = parse_response(&raw).body;
        assert!(
            got == big,
            "{label}: slow download cut at {} bytes",
            got.len()
        );
        assert!(
            started.elapsed() > Duration::from_secs(2),
            "{label}: not slow enough to test"
        );
    });
}

/// A registered session logged in to `account` (registered by it, on
/// shard `shard`), and its `FILEHOST TOKEN`.
fn session_with_token(srv: &TestServer, shard: usize, account: &str) -> (Client, String) {
    let mut c = srv.connect_on(shard);
    c.send(&format!("NICK {account}"));
    c.send(&format!("REGISTER {account} * :{PASSWORD}"));
    let (l, _) = c.until("REGISTER", |l| l.is("REGISTER") || l.is("FAIL"));
    assert!(l.is("REGISTER"), "{}: {}", srv.label(), l.raw);
    c.send(&format!("USER {account} 0 * :{account}"));
    c.until("welcome", |l| l.is("001"));
    c.send("FILEHOST TOKEN");
    let (l, _) = c.until("token", |l| l.is("FILEHOST") || l.is("FAIL"));
    assert!(l.is("FILEHOST"), "{}: {}", srv.label(), l.raw);
    assert_eq!(l.params[0], "TOKEN", "{}", l.raw);
    assert_eq!(l.params[2], "3600", "{}", l.raw);
    (c, l.params[1].clone())
}

/// `FILEHOST TOKEN` and `Authorization: Bearer`: a logged-in session's
/// token uploads as its account from every shard; a forged, altered or
/// malformed token, or one whose session has ended, is 401 with a Bearer
/// challenge; without an account there is no token.
fn session_tokens(io: Io) {
    each_filehost(
        io,
        |_| {},
        |srv, data| {
            let label = srv.label();
            let addr = ws_addr(srv);
            let bearer_refused = |r: &Resp, what: &str| {
                assert_eq!(r.status, 401, "{label} {what}");
                let challenge = r.header("www-authenticate").unwrap_or_default();
                assert!(
                    challenge.starts_with("Bearer ") && challenge.contains("invalid_token"),
                    "{label} {what}: {challenge}"
                );
            };
            // Not logged in: no token; bad subcommands.
            let mut anon = srv.connect_on(0);
            anon.send("NICK anon");
            anon.send("USER anon 0 * :anon");
            anon.until("welcome", |l| l.is("001"));
            anon.send("FILEHOST TOKEN");
            let (l, _) = anon.until("FAIL", |l| l.is("FAIL"));
            assert_eq!(l.params[..2], ["FILEHOST", "ACCOUNT_REQUIRED"], "{label}");
            anon.send("FILEHOST STEAL");
            let (l, _) = anon.until("FAIL", |l| l.is("FAIL"));
            assert_eq!(
                l.params[..3],
                ["FILEHOST", "INVALID_PARAMS", "STEAL"],
                "{label}"
            );
            anon.send("FILEHOST");
            let (l, _) = anon.until("461", |l| l.is("461"));
            assert_eq!(l.params[1], "FILEHOST", "{label}");

            let (mut session, token) = session_with_token(srv, srv.shards - 1, "tokuser");
            let auth = format!("Bearer {token}");
            // Connections land on every shard: the session's own and others.
            for i in 0..2 * srv.shards {
                let body = format!("upload {i} with a session token");
                let r = upload(addr, Some(&auth), "t.txt", body.as_bytes());
                assert_eq!(
                    r.status,
                    201,
                    "{label} #{i}: {:?}",
                    String::from_utf8_lossy(&r.body)
                );
                let path = path_of(srv, r.header("location").expect("Location"));
                assert_eq!(get(addr, &path).body, body.as_bytes(), "{label} #{i}");
                let id = path.split('/').nth(2).expect("id");
                let owner = std::fs::read_to_string(data.join("files").join(id).join(".account"));
                assert_eq!(owner.expect(".account").trim(), "tokuser", "{label}");
            }
            // Altered: one character changed (a different payload or MAC).
            let mut altered = token.clone().into_bytes();
            let mid = altered.len() / 2;
            altered[mid] = if altered[mid] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(altered).expect("ascii");
            for (what, a) in [
                ("altered", format!("Bearer {altered}")),
                ("cut", format!("Bearer {}", &token[..token.len() - 4])),
                (
                    "forged",
                    "Bearer AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                        .into(),
                ),
                ("malformed", "Bearer not a token".into()),
                ("empty", "Bearer ".into()),
            ] {
                bearer_refused(&upload(addr, Some(&a), "x.txt", b"x"), what);
            }
            // The session ends: its token with it, seen from every shard.
            session.send("QUIT :bye");
            session.until("ERROR", |l| l.is("ERROR"));
            for i in 0..2 * srv.shards {
                bearer_refused(
                    &upload(addr, Some(&auth), "late.txt", b"late"),
                    &format!("after QUIT #{i}"),
                );
            }
            // A new session of the same account, logged in with SASL, gets a
            // token of its own that works while it lasts.
            let mut c = srv.connect_on(0);
            c.send("CAP REQ :sasl");
            c.send("NICK tokuser3");
            c.send("USER tokuser3 0 * :x");
            c.send("AUTHENTICATE PLAIN");
            c.until("+", |l| l.is("AUTHENTICATE"));
            let plain = STANDARD.encode(format!("tokuser\0tokuser\0{PASSWORD}"));
            c.send(&format!("AUTHENTICATE {plain}"));
            c.until("903", |l| l.is("903"));
            c.send("CAP END");
            c.until("welcome", |l| l.is("001"));
            c.send("FILEHOST TOKEN");
            let (l, _) = c.until("token", |l| l.is("FILEHOST"));
            let fresh = format!("Bearer {}", l.params[1]);
            assert_ne!(fresh, auth, "{label}");
            let r = upload(addr, Some(&fresh), "fresh.txt", b"fresh");
            assert_eq!(r.status, 201, "{label}: a new session's token");
            // A plain close (no QUIT) ends it too.
            drop(c);
            wait_until("the closed session's token refused", || {
                upload(addr, Some(&fresh), "late.txt", b"late").status == 401
            });
        },
    );
}

shardline::per_backend! {
    session_tokens => session_tokens;
    slow_download_is_paced_not_cut => slow_download_is_paced_not_cut;
    concurrent_uploads_share_one_quota => concurrent_uploads_share_one_quota;
    expiry_and_restart => expiry_and_restart;
    upload_and_download => upload_and_download;
    refusals => refusals;
    stalled_and_cut_uploads => stalled_and_cut_uploads;
    isupport_only_when_on => isupport_only_when_on;
}
