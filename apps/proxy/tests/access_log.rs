//! The access log's formats, both backends: combined lines (checked with a
//! regex, quotes and control bytes escaped) and JSON lines (parsed with
//! serde_json, every field), written to `access_log`, with the client named
//! by a PROXY header; a reload reopens the file (logrotate), and switches
//! the format.

mod common;

use std::{io::Write, net::SocketAddr, path::Path, time::Duration};

use common::{wait_until, Answer, HttpBackend, HttpClient, TestProxy};
use regex_automata::meta::Regex;
use shardline::{proxy_protocol, Io};

fn config(backend: SocketAddr, format: &str, log: &Path) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"web\"\n\
         proxy_protocol = true\nproxy_protocol_trusted = [\"127.0.0.1\"]\n\
         [pool.web]\nbackends = [{{ address = \"{backend}\" }}]\n\
         [log]\naccess_format = \"{format}\"\naccess_log = \"{}\"\n",
        log.display()
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A client whose PROXY header says it is `203.0.113.50:7777`.
fn client(proxy: &TestProxy) -> HttpClient<std::net::TcpStream> {
    let mut s = proxy.connect();
    let mut h = Vec::new();
    proxy_protocol::encode_v2("203.0.113.50:7777".parse().unwrap(), proxy.addr, &mut h);
    s.write_all(&h).unwrap();
    HttpClient::new(s)
}

fn formats(io: Io) {
    let mut backend = HttpBackend::start("b1", Answer::Info);
    let dir = std::env::temp_dir().join(format!("proxy-access-{}-{io}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let proxy = TestProxy::start(io, 2, &config(backend.addr(), "combined", &log));
    let mut c = client(&proxy);
    c.send(
        b"GET /a?q=%22x%22 HTTP/1.1\r\nHost: t\r\nReferer: http://ref/\"r\"\\\r\n\
          User-Agent: agent/1 \xc3\xa9\r\n\r\n",
    );
    let r = c.response(false);
    assert_eq!(r.status, 200);
    let body_len = r.body.len();
    c.send(b"GET /missing-ua HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).status, 200);
    assert!(wait_until(Duration::from_secs(5), || lines(&log).len() == 2));
    let re = Regex::new(
        r#"^(\S+) - - \[(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) \+0000\] "([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)"$"#,
    )
    .unwrap();
    let got = lines(&log);
    let mut caps = re.create_captures();
    re.captures(got[0].as_str(), &mut caps);
    assert!(caps.is_match(), "{}: {}", proxy.label, got[0]);
    let field = |i: usize| &got[0][caps.get_group(i).unwrap().range()];
    assert_eq!(field(1), "203.0.113.50", "the PROXY header's client");
    assert_eq!(field(8), "GET /a?q=%22x%22 HTTP/1.1");
    assert_eq!(field(9), "200");
    assert_eq!(field(10), body_len.to_string());
    assert_eq!(field(11), "http://ref/\\x22r\\x22\\x5C");
    assert_eq!(field(12), "agent/1 \\xC3\\xA9");
    re.captures(got[1].as_str(), &mut caps);
    assert!(caps.is_match(), "{}", got[1]);
    assert_eq!(&got[1][caps.get_group(11).unwrap().range()], "-");

    // logrotate: the file is moved away, SIGHUP (a reload) reopens it; the
    // format switches to JSON at the same time.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    proxy
        .reload(&config(backend.addr(), "json", &log))
        .expect("reload");
    let mut c = client(&proxy);
    c.send(b"POST /p?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nUser-Agent: \"ua\" \xc3\xa9\r\n\r\nabc");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert!(wait_until(Duration::from_secs(5), || lines(&log).len() == 1));
    assert_eq!(lines(&rotated).len(), 2, "nothing more in the rotated file");
    let v: serde_json::Value = serde_json::from_str(&lines(&log)[0]).expect("one JSON object");
    assert_eq!(v["client"], "203.0.113.50");
    assert_eq!(v["client_port"], 7777);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["target"], "/p?x=1");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes"], r.body.len() as u64);
    assert_eq!(v["referer"], serde_json::Value::Null);
    assert_eq!(v["user_agent"], "\"ua\" \u{e9}");
    assert_eq!(v["pool"], "web");
    assert_eq!(v["backend"], backend.addr().to_string());
    assert_eq!(v["event"], "request");
    assert_eq!(v["error"], serde_json::Value::Null);
    assert!(v["duration_ms"].is_u64());
    let t = v["time"].as_str().unwrap();
    assert!(
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
        "{t}"
    );

    // A failed request (no backend reachable) is logged with its error.
    backend.kill();
    let mut c = client(&proxy);
    c.send(b"GET /down HTTP/1.1\r\nHost: t\r\n\r\n");
    let status = c.response(false).status;
    assert!(wait_until(Duration::from_secs(5), || lines(&log).len() == 2));
    let v: serde_json::Value = serde_json::from_str(&lines(&log)[1]).unwrap();
    assert_eq!(v["status"], status);
    assert_eq!(v["event"], "failed");
    assert!(v["error"].is_string(), "{v}");
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

shardline::per_backend! {
    formats => formats;
}
