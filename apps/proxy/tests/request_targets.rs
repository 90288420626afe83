//! Request targets and the fields a backend must see right, end to end on both
//! I/O backends: absolute-form routed on its authority and forwarded in
//! origin-form with a matching Host; Host kept whatever Connection lists;
//! HTTP/1.0 with Transfer-Encoding, CONNECT, asterisk-form outside OPTIONS and
//! other target forms refused before any backend sees a byte.

mod common;

use common::{Answer, HttpBackend, HttpClient, TestProxy};
use shardline::Io;

/// Two pools: `api` for host api.test, `web` for everything else.
fn two_pools(api: &HttpBackend, web: &HttpBackend) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"web\"\n\
         [[listener.route]]\nhost = \"api.test\"\npool = \"api\"\n\
         [pool.api]\nbackends = [{{ address = \"{}\" }}]\n\
         [pool.web]\nbackends = [{{ address = \"{}\" }}]\n",
        api.addr(),
        web.addr()
    )
}

fn absolute_form_routes_on_the_authority(io: Io) {
    let api = HttpBackend::start("api", Answer::Info);
    let web = HttpBackend::start("web", Answer::Info);
    let proxy = TestProxy::start(io, 2, &two_pools(&api, &web));
    let mut c = HttpClient::new(proxy.connect());
    // The Host field says web, the target's authority says api: the authority wins.
    c.send(b"GET http://API.test:8080/v1/items?x=1 HTTP/1.1\r\nHost: web.test\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", proxy.label);
    assert_eq!(r.header("X-Backend"), Some("api"), "{}", proxy.label);
    let seen = api.requests();
    assert_eq!(
        seen[0].target, "/v1/items?x=1",
        "{}: origin-form",
        proxy.label
    );
    assert_eq!(
        seen[0].header("Host"),
        Some("API.test:8080"),
        "{}",
        proxy.label
    );
    assert_eq!(
        seen[0].raw_header_count("host"),
        1,
        "{}: exactly one Host",
        proxy.label
    );
    // No path: `/`.
    c.send(b"GET http://api.test HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(c.response(false).status, 200);
    assert_eq!(api.requests()[1].target, "/");
    assert!(web.requests().is_empty(), "{}", proxy.label);
    proxy.shutdown().unwrap();
}

fn host_is_never_removed(io: Io) {
    let api = HttpBackend::start("api", Answer::Info);
    let web = HttpBackend::start("web", Answer::Info);
    let proxy = TestProxy::start(io, 1, &two_pools(&api, &web));
    let mut c = HttpClient::new(proxy.connect());
    c.send(b"GET /x HTTP/1.1\r\nHost: api.test\r\nConnection: Host, X-Hop\r\nX-Hop: 1\r\n\r\n");
    assert_eq!(c.response(false).status, 200, "{}", proxy.label);
    let seen = api.requests();
    assert_eq!(seen[0].header("Host"), Some("api.test"), "{}", proxy.label);
    assert_eq!(
        seen[0].header("X-Hop"),
        None,
        "{}: still hop-by-hop",
        proxy.label
    );
    proxy.shutdown().unwrap();
}

fn refused_requests_reach_no_backend(io: Io) {
    let api = HttpBackend::start("api", Answer::Info);
    let web = HttpBackend::start("web", Answer::Info);
    let proxy = TestProxy::start(io, 1, &two_pools(&api, &web));
    for (request, status) in [
        (
            &b"POST /up HTTP/1.0\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
            400,
        ),
        (b"CONNECT api.test:443 HTTP/1.1\r\nHost: api.test\r\n\r\n", 405),
        (b"GET * HTTP/1.1\r\nHost: web.test\r\n\r\n", 400),
        (b"GET api.test:80 HTTP/1.1\r\nHost: web.test\r\n\r\n", 400),
        (b"GET http://user@api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n", 400),
    ] {
        let mut c = HttpClient::new(proxy.connect());
        c.send(request);
        let r = c.response(false);
        let shown = String::from_utf8_lossy(request);
        assert_eq!(r.status, status, "{}: {shown}", proxy.label);
        assert!(c.closed(), "{}: closed after {shown}", proxy.label);
    }
    assert!(api.requests().is_empty() && web.requests().is_empty());
    assert_eq!(
        api.accepted() + web.accepted(),
        0,
        "{}: no connection",
        proxy.label
    );
    // OPTIONS * is forwarded as it is.
    let mut c = HttpClient::new(proxy.connect());
    c.send(b"OPTIONS * HTTP/1.1\r\nHost: web.test\r\n\r\n");
    assert_eq!(c.response(false).status, 200, "{}", proxy.label);
    assert_eq!(web.requests()[0].target, "*");
    proxy.shutdown().unwrap();
}

shardline::per_backend! {
    absolute_form => absolute_form_routes_on_the_authority;
    host_kept => host_is_never_removed;
    refused => refused_requests_reach_no_backend;
}
