//! Config parsing and validation.
use super::*;

const FULL: &str = r#"
    [[listener]]
    address = "127.0.0.1:8080"
    mode = "http"
    pool = "web"

    [[listener.route]]
    host = "API.example.com"
    path_prefix = "/v1/"
    pool = "api"

    [[listener.route]]
    path_prefix = "/static/"
    pool = "api"

    [[listener]]
    address = "127.0.0.1:8443"
    mode = "tcp"
    pool = "web"

    [pool.web]
    backends = [{ address = "127.0.0.1:9001", weight = 2 }, { address = "127.0.0.1:9002" }]

    [pool.api]
    backends = [{ address = "127.0.0.1:9101" }]
    balance = "round-robin"

    [timeouts]
    client_header_ms = 500

    [limits]
    max_body_bytes = 1000
"#;

#[test]
fn full_config_parses_and_resolves_pools() {
    let c = Config::parse(FULL, "test").expect("valid");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.pools.len(), 2);
    let web = c.pools.iter().position(|p| p.name == "web").expect("web");
    let api = c.pools.iter().position(|p| p.name == "api").expect("api");
    assert_eq!(c.pools[web].backends[0].weight, 2);
    assert_eq!(c.pools[web].backends[1].weight, 1);
    assert_eq!(c.listeners[0].pool, Some(web));
    assert_eq!(c.listeners[1].mode, Mode::Tcp);
    assert_eq!(c.timeouts.client_header_ms, 500);
    assert_eq!(c.timeouts.backend_response_ms, 30_000);
    assert_eq!(c.limits.max_body_bytes, 1000);
    // Routing: host + prefix, prefix only, default.
    assert_eq!(c.route(0, Some("api.example.com"), "/v1/users"), Some(api));
    assert_eq!(c.route(0, Some("other"), "/v1/users"), Some(web));
    assert_eq!(c.route(0, None, "/static/a.css"), Some(api));
    assert_eq!(c.route(0, Some("x"), "/"), Some(web));
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../proxy.example.toml");
    Config::parse(text, "proxy.example.toml").expect("example config is valid");
}

fn err(text: &str) -> String {
    Config::parse(text, "t")
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn bad_configs_say_what_is_wrong() {
    assert!(err("").contains("no listener"));
    let e = err("[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"http\"\npool = \"nope\"\n");
    assert!(e.contains("\"nope\"") && e.contains("not defined"), "{e}");
    let e = err("[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"udp\"\npool = \"p\"\n");
    assert!(e.contains("udp"), "{e}");
    let e = err("[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"tcp\"\n");
    assert!(e.contains("needs a pool"), "{e}");
    let e = err(
        "[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"p\"\n[pool.p]\nbackends = []\n",
    );
    assert!(e.contains("no backends"), "{e}");
    let e = err(
        "[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"p\"\n[pool.p]\nbackends = [{ address = \"127.0.0.1:2\", weight = 0 }]\n",
    );
    assert!(e.contains("weight 0"), "{e}");
    let e = err(
        "[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"p\"\ncolour = 1\n[pool.p]\nbackends = [{ address = \"127.0.0.1:2\" }]\n",
    );
    assert!(e.contains("colour"), "unknown keys are errors: {e}");
    let e = err("[[listener]]\naddress = \"not an address\"\nmode = \"tcp\"\npool = \"p\"\n");
    assert!(e.contains("address"), "{e}");
    let e = err(
        "[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"http\"\npool = \"p\"\n[[listener.route]]\npath_prefix = \"v1\"\npool = \"p\"\n[pool.p]\nbackends = [{ address = \"127.0.0.1:2\" }]\n",
    );
    assert!(e.contains("must start with '/'"), "{e}");
    let pool = "[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"p\"\n[pool.p]\nbackends = [{ address = \"127.0.0.1:2\" }]\n";
    let e = err(&format!("{pool}hash_header = \"X-U\"\n"));
    assert!(e.contains("consistent-hash"), "{e}");
    let e = err(&format!("{pool}balance = \"fastest\"\n"));
    assert!(e.contains("fastest"), "{e}");
    let e = err(&format!("{pool}[pool.p.health]\nfall = 0\n"));
    assert!(e.contains("at least 1"), "{e}");
    let e = err(&format!(
        "{pool}[pool.p.health]\nkind = \"http\"\npath = \"x\"\n"
    ));
    assert!(e.contains("must start with '/'"), "{e}");
    let ok = Config::parse(
        &format!(
            "{pool}balance = \"least-connections\"\nfail_open = true\n[pool.p.health]\nrise = 5\n"
        ),
        "t",
    )
    .expect("valid");
    let h = ok.pools[0].health.as_ref().expect("health");
    assert_eq!(
        (h.kind, h.rise, h.fall, h.interval_ms),
        (CheckKind::Tcp, 5, 3, 2000)
    );
    assert!(ok.pools[0].fail_open);
    assert_eq!(ok.pools[0].balance, BalanceKind::LeastConnections);
}

#[test]
fn weights_are_bounded() {
    let with = |w: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"http\"\npool = \"web\"\n\
             [pool.web]\nbalance = \"consistent-hash\"\n\
             backends = [{{ address = \"127.0.0.1:8999\" }}, {{ address = \"127.0.0.1:9000\", weight = {w} }}]\n"
        )
    };
    let ok = Config::parse(&with("256"), "t").expect("256 is the limit, included");
    assert_eq!(ok.pools[0].backends[1].weight, MAX_WEIGHT);
    assert_eq!(
        err(&with("4294967295")),
        "pool \"web\": backend 127.0.0.1:9000: weight 4294967295 is over the limit of 256"
    );
    let e = err(&with("257"));
    assert!(e.contains("weight 257 is over the limit of 256"), "{e}");
    assert!(matches!(
        Config::parse(&with("257"), "t"),
        Err(ConfigError::WeightOverLimit { weight: 257, .. })
    ));
    // Past u32, and negative: refused by the parser, naming the range.
    for w in ["4294967296", "-1", "9223372036854775807"] {
        let e = err(&with(w));
        assert!(
            e.contains(&format!("weight {w} is out of range 1..=256")),
            "{e}"
        );
    }
}

#[test]
fn client_body_timeout_defaults_to_a_minute_and_must_be_positive() {
    let base = "[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"http\"\npool = \"p\"\n\
                [pool.p]\nbackends = [{ address = \"127.0.0.1:2\" }]\n";
    let c = Config::parse(base, "t").expect("valid");
    assert_eq!(c.timeouts.client_body_ms, 60_000);
    let c =
        Config::parse(&format!("{base}[timeouts]\nclient_body_ms = 250\n"), "t").expect("valid");
    assert_eq!(c.timeouts.client_body_ms, 250);
    let e = err(&format!("{base}[timeouts]\nclient_body_ms = 0\n"));
    assert!(
        e.contains("timeouts.client_body_ms must be at least 1"),
        "{e}"
    );
}

#[test]
fn idle_timeouts_default_to_ten_minutes_and_an_hour_and_must_be_positive() {
    let base = "[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"p\"\n\
                [pool.p]\nbackends = [{ address = \"127.0.0.1:2\" }]\n";
    let c = Config::parse(base, "t").expect("valid");
    assert_eq!(c.timeouts.tcp_idle_ms, 600_000);
    assert_eq!(c.timeouts.upgrade_idle_ms, 3_600_000);
    let c = Config::parse(
        &format!("{base}[timeouts]\ntcp_idle_ms = 250\nupgrade_idle_ms = 300\n"),
        "t",
    )
    .expect("valid");
    assert_eq!(c.timeouts.tcp_idle_ms, 250);
    assert_eq!(c.timeouts.upgrade_idle_ms, 300);
    for key in ["tcp_idle_ms", "upgrade_idle_ms"] {
        let e = err(&format!("{base}[timeouts]\n{key} = 0\n"));
        assert!(
            e.contains(&format!("timeouts.{key} must be at least 1")),
            "{e}"
        );
    }
}

#[test]
fn quick_start_makes_one_pool() {
    let l: SocketAddr = "127.0.0.1:8080".parse().expect("literal");
    let b: SocketAddr = "127.0.0.1:9001".parse().expect("literal");
    let c = Config::quick_start(&[l], &[b, b], Mode::Http).expect("valid");
    assert_eq!(c.pools[0].backends.len(), 2);
    assert_eq!(c.listeners[0].pool, Some(0));
    assert!(matches!(
        Config::quick_start(&[l], &[], Mode::Tcp),
        Err(ConfigError::NoBackend)
    ));
}

#[test]
fn admin_listen_is_optional_and_strict() {
    let base = "[[listener]]\naddress = \"127.0.0.1:8080\"\nmode = \"http\"\npool = \"p\"\n\
                [pool.p]\nbackends = [{ address = \"127.0.0.1:9001\" }]\n";
    assert_eq!(Config::parse(base, "t").expect("valid").admin_listen, None);
    let with = format!("{base}[admin]\nlisten = \"127.0.0.1:9100\"\n");
    assert_eq!(
        Config::parse(&with, "t").expect("valid").admin_listen,
        Some("127.0.0.1:9100".parse().expect("literal"))
    );
    let unknown = format!("{base}[admin]\nlisten = \"127.0.0.1:9100\"\nport = 1\n");
    assert!(Config::parse(&unknown, "t").is_err());
}

#[test]
fn max_connections_is_optional_and_never_zero() {
    let set = Config::parse(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{ address = \"127.0.0.1:1\" }]\n\
         [limits]\nmax_connections = 10\n",
        "t",
    )
    .expect("valid");
    assert_eq!(set.limits.max_connections, Some(10));
    assert_eq!(
        ProxyLimits::default().max_connections,
        None,
        "derived at start"
    );
    assert!(Config::parse(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{ address = \"127.0.0.1:1\" }]\n\
         [limits]\nmax_connections = 0\n",
        "t",
    )
    .is_err());
}

#[test]
fn splice_mode_parses_and_defaults_to_auto() {
    let base = "[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"tcp\"\npool = \"p\"\n\
                [pool.p]\nbackends = [{ address = \"127.0.0.1:2\" }]\n";
    let c = Config::parse(base, "test").expect("valid");
    assert_eq!(c.limits.splice, SpliceMode::Auto);
    for (text, mode) in [
        ("never", SpliceMode::Never),
        ("always", SpliceMode::Always),
        ("auto", SpliceMode::Auto),
    ] {
        let c = Config::parse(&format!("{base}[limits]\nsplice = \"{text}\"\n"), "test")
            .expect("valid");
        assert_eq!(c.limits.splice, mode);
    }
    let bad = Config::parse(&format!("{base}[limits]\nsplice = \"sometimes\"\n"), "test");
    assert!(bad.is_err(), "unknown splice mode is an error");
}

/// Pools a, b and d, and a TLS passthrough listener with `extra` lines.
fn sni_config(extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:1\"\nmode = \"tcp\"\n{extra}\n\
         [pool.a]\nbackends = [{{ address = \"127.0.0.1:2\" }}]\n\
         [pool.b]\nbackends = [{{ address = \"127.0.0.1:3\" }}]\n\
         [pool.d]\nbackends = [{{ address = \"127.0.0.1:4\" }}]\n"
    )
}

#[test]
fn sni_routes_exact_names_beat_wildcards_of_one_label() {
    let c = Config::parse(
        &sni_config(
            "tls_passthrough = true\npool = \"d\"\n\
             sni = { \"A.Example.COM\" = \"a\", \"*.example.com\" = \"b\", \"*.x.example.org\" = \"a\" }",
        ),
        "t",
    )
    .expect("valid");
    let pool = |n: &str| c.pools.iter().position(|p| p.name == n);
    let sni = c.listeners[0].sni.as_ref().expect("passthrough");
    assert_eq!(sni.len(), 3);
    // Exact, case-folded at load (names from the reader are lower-case).
    assert_eq!(c.sni_route(0, Some("a.example.com")), pool("a"));
    // The wildcard: exactly one more label.
    assert_eq!(c.sni_route(0, Some("b.example.com")), pool("b"));
    assert_eq!(c.sni_route(0, Some("x-1.example.com")), pool("b"));
    assert_eq!(c.sni_route(0, Some("y.x.example.org")), pool("a"));
    // Not the bare suffix, not two labels more: the default pool.
    assert_eq!(c.sni_route(0, Some("example.com")), pool("d"));
    assert_eq!(c.sni_route(0, Some("c.b.example.com")), pool("d"));
    assert_eq!(c.sni_route(0, Some("x.example.org")), pool("d"));
    assert_eq!(c.sni_route(0, Some("other.test")), pool("d"));
    // No SNI: the default pool.
    assert_eq!(c.sni_route(0, None), pool("d"));
    assert_eq!(c.timeouts.tls_hello_ms, 5000, "default hello deadline");

    // Without a default pool, no match closes (None).
    let c = Config::parse(
        &sni_config("tls_passthrough = true\nsni = { \"a.test\" = \"a\" }"),
        "t",
    )
    .expect("valid");
    assert!(c.listeners[0].pool.is_none());
    assert_eq!(c.sni_route(0, Some("a.test")), pool("a"));
    assert_eq!(c.sni_route(0, Some("b.test")), None);
    assert_eq!(c.sni_route(0, None), None);

    // Passthrough with only a pool: every TLS client goes there.
    let c = Config::parse(&sni_config("tls_passthrough = true\npool = \"b\""), "t").expect("valid");
    assert!(c.listeners[0].sni.as_ref().is_some_and(SniRoutes::is_empty));
    assert_eq!(c.sni_route(0, Some("anything.test")), pool("b"));
    // A plain TCP listener has no SNI table: its pool.
    let c = Config::parse(&sni_config("pool = \"a\""), "t").expect("valid");
    assert!(c.listeners[0].sni.is_none());
    assert_eq!(c.sni_route(0, Some("b.test")), pool("a"));
}

#[test]
fn bad_sni_configs_say_what_is_wrong() {
    let pt = "tls_passthrough = true\npool = \"d\"\n";
    for (extra, want) in [
        // Unknown pool, naming the route.
        (
            format!("{pt}sni = {{ \"a.test\" = \"nope\" }}"),
            "sni route \"a.test\" of listener 127.0.0.1:1 uses pool \"nope\", which is not defined",
        ),
        // Patterns that are not host names or one-label wildcards.
        (
            format!("{pt}sni = {{ \"*\" = \"a\" }}"),
            "other than a leading",
        ),
        (
            format!("{pt}sni = {{ \"a.*.test\" = \"a\" }}"),
            "other than a leading",
        ),
        (
            format!("{pt}sni = {{ \"*.*.test\" = \"a\" }}"),
            "other than a leading",
        ),
        (
            format!("{pt}sni = {{ \"*a.test\" = \"a\" }}"),
            "other than a leading",
        ),
        (
            format!("{pt}sni = {{ \"a_b.test\" = \"a\" }}"),
            "not a host name",
        ),
        (
            format!("{pt}sni = {{ \"a.test.\" = \"a\" }}"),
            "empty label",
        ),
        (format!("{pt}sni = {{ \"\" = \"a\" }}"), "empty"),
        (
            format!("{pt}sni = {{ \"10.0.0.1\" = \"a\" }}"),
            "IP address",
        ),
        (
            format!("{pt}sni = {{ \"a.test:443\" = \"a\" }}"),
            "not a host name",
        ),
        // The same pattern twice, in different case.
        (
            format!("{pt}sni = {{ \"A.test\" = \"a\", \"a.TEST\" = \"b\" }}"),
            "are the same",
        ),
        // sni without passthrough; passthrough without pool or routes.
        (
            "pool = \"d\"\nsni = { \"a.test\" = \"a\" }".to_string(),
            "not tls_passthrough",
        ),
        ("tls_passthrough = true".to_string(), "needs a pool"),
        (
            "tls_passthrough = true\nsni = {}".to_string(),
            "needs a pool",
        ),
    ] {
        let e = err(&sni_config(&extra));
        assert!(e.contains(want), "{extra}: {e}");
    }
    // On an HTTP listener.
    let http = sni_config("pool = \"d\"\ntls_passthrough = true").replace("\"tcp\"", "\"http\"");
    assert!(
        err(&http).contains("SNI routing is for tcp listeners"),
        "{}",
        err(&http)
    );
    let http =
        sni_config("pool = \"d\"\nsni = { \"a.test\" = \"a\" }").replace("\"tcp\"", "\"http\"");
    assert!(err(&http).contains("SNI routing is for tcp listeners"));
    // The hello deadline must be positive.
    let e = err(&format!(
        "{}[timeouts]\ntls_hello_ms = 0\n",
        sni_config("tls_passthrough = true\npool = \"d\"")
    ));
    assert!(e.contains("tls_hello_ms must be at least 1"), "{e}");
}

/// Passing TLS through and terminating it are exclusive, on a listener and on
/// the pools it relays to.
#[test]
fn tls_passthrough_excludes_tls_termination_and_tls_pools() {
    let e = err(&sni_config(
        "tls_passthrough = true\npool = \"d\"\n\
         [listener.tls]\ncert = \"site.pem\"\nkey = \"site.key\"",
    ));
    assert!(e.contains("both tls_passthrough and [listener.tls]"), "{e}");

    let dir = std::env::temp_dir().join(format!("proxy-sni-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca = dir.join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).expect("cert");
    std::fs::write(&ca, cert.cert.pem()).expect("write CA");
    let tls_pool = format!(
        "[pool.t]\nbackends = [{{ address = \"127.0.0.1:5\" }}]\ntls = true\ntls_ca = {ca:?}\n"
    );
    // The same pool is fine for a plain TCP listener.
    let plain = format!("{}{tls_pool}", sni_config("pool = \"t\""));
    Config::parse(&plain, "t").expect("a tls pool behind a plain tcp listener");
    for extra in [
        "tls_passthrough = true\npool = \"t\"",
        "tls_passthrough = true\npool = \"d\"\nsni = { \"a.test\" = \"a\", \"*.b.test\" = \"t\" }",
    ] {
        let e = err(&format!("{}{tls_pool}", sni_config(extra)));
        assert!(
            e.contains("relays to pool \"t\", which has tls = true"),
            "{extra}: {e}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn proxy_protocol_options_are_validated() {
    let base = |listener: &str, pool: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:8080\"\nmode = \"tcp\"\npool = \"p\"\n{listener}\n\
             [pool.p]\nbackends = [{{ address = \"127.0.0.1:9000\" }}]\n{pool}\n"
        )
    };
    let c = Config::parse(
        &base(
            "proxy_protocol = true\nproxy_protocol_trusted = [\"10.0.0.0/8\", \"::1\"]",
            "send_proxy_protocol = \"v1\"",
        ),
        "t",
    )
    .unwrap();
    let trusted = c.listeners[0].proxy_protocol.as_ref().unwrap();
    assert_eq!(trusted.len(), 2);
    assert!(trusted[0].contains("10.9.9.9".parse().unwrap()));
    assert_eq!(
        c.pools[0].send_proxy_protocol,
        Some(crate::config::ProxyVersion::V1)
    );
    for (listener, pool, says) in [
        ("proxy_protocol = true", "", "needs proxy_protocol_trusted"),
        (
            "proxy_protocol_trusted = [\"::1\"]",
            "",
            "without proxy_protocol",
        ),
        (
            "proxy_protocol = true\nproxy_protocol_trusted = [\"10.0.0.0/99\"]",
            "",
            "prefix length",
        ),
        ("", "send_proxy_protocol = \"v3\"", "unknown variant"),
        (
            "",
            "send_proxy_protocol = \"v2\"\ntls = true",
            "not supported",
        ),
    ] {
        let e = Config::parse(&base(listener, pool), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn rate_limit_is_parsed_and_checked() {
    let with = |rl: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:8080\"\nmode = \"http\"\npool = \"p\"\n\
             rate_limit = {rl}\n[pool.p]\nbackends = [{{ address = \"127.0.0.1:9000\" }}]\n"
        )
    };
    let c = Config::parse(&with("{ requests_per_second = 10, burst = 20 }"), "t").unwrap();
    let rl = c.listeners[0].rate_limit.clone().expect("a rate limit");
    assert_eq!(rl.requests_per_second, 10.0);
    assert_eq!(rl.burst, 20);
    assert_eq!(rl.max_clients, 65_536);
    let c = Config::parse(
        &with("{ requests_per_second = 0.5, burst = 1, max_clients = 10 }"),
        "t",
    )
    .unwrap();
    assert_eq!(c.listeners[0].rate_limit.as_ref().unwrap().max_clients, 10);
    for bad in [
        "{ requests_per_second = 0, burst = 1 }",
        "{ requests_per_second = -1, burst = 1 }",
        "{ requests_per_second = nan, burst = 1 }",
        "{ requests_per_second = inf, burst = 1 }",
        "{ requests_per_second = 1, burst = 0 }",
        "{ requests_per_second = 1, burst = -3 }",
        "{ requests_per_second = 1, burst = 1, max_clients = 0 }",
        "{ requests_per_second = 1 }",
        "{ requests_per_second = 1, burst = 1, per = 2 }",
    ] {
        assert!(Config::parse(&with(bad), "t").is_err(), "{bad} accepted");
    }
}

#[test]
fn outlier_is_parsed_and_checked() {
    let with = |o: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:8080\"\nmode = \"http\"\npool = \"p\"\n\
             [pool.p]\nbackends = [{{ address = \"127.0.0.1:9000\" }}]\n[pool.p.outlier]\n{o}\n"
        )
    };
    let c = Config::parse(&with(""), "t").unwrap();
    assert_eq!(c.pools[0].outlier, Some(Outlier::default()));
    let c = Config::parse(
        &with("consecutive_failures = 2\nmax_ejected_percent = 100"),
        "t",
    )
    .unwrap();
    let o = c.pools[0].outlier.clone().unwrap();
    assert_eq!((o.consecutive_failures, o.max_ejected_percent), (2, 100));
    for bad in [
        "consecutive_failures = 0",
        "base_ejection_ms = 0",
        "base_ejection_ms = 5000\nmax_ejection_ms = 4000",
        "max_ejection_ms = 90000000",
        "max_ejected_percent = 101",
        "max_ejected_percent = -1",
        "interval = 3",
    ] {
        assert!(Config::parse(&with(bad), "t").is_err(), "{bad} accepted");
    }
}

#[test]
fn backend_connection_caps_are_parsed_and_checked() {
    let with = |keys: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:8080\"\nmode = \"http\"\npool = \"p\"\n\
             [pool.p]\nbackends = [{{ address = \"127.0.0.1:9000\" }}]\n{keys}\n"
        )
    };
    let c = Config::parse(&with(""), "t").unwrap();
    let p = &c.pools[0];
    assert_eq!(
        (p.max_connections_per_backend, p.queue, p.queue_timeout_ms),
        (None, 100, 5000)
    );
    let c = Config::parse(
        &with("max_connections_per_backend = 10\nqueue = 0\nqueue_timeout_ms = 1"),
        "t",
    )
    .unwrap();
    assert_eq!(c.pools[0].max_connections_per_backend, Some(10));
    assert_eq!(crate::pools::shard_cap(&c.pools[0], 4), Some(3));
    assert_eq!(crate::pools::shard_cap(&c.pools[0], 64), Some(1));
    assert_eq!(crate::pools::shard_cap(&c.pools[0], 0), Some(10));
    for bad in [
        "max_connections_per_backend = 0",
        "max_connections_per_backend = -1",
        "max_connections_per_backend = 2000000",
        "queue = 2000000",
        "queue = -1",
        "queue_timeout_ms = 0",
    ] {
        assert!(Config::parse(&with(bad), "t").is_err(), "{bad} accepted");
    }
}
