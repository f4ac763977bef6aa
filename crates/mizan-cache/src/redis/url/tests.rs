//! Unit tests of store URLs: parsing, refusals, redaction, the `ca` file.

use super::*;

fn node(host: &str, port: u16) -> Node {
    Node { host: host.into(), port }
}

fn auth(username: Option<&str>, password: Option<&str>) -> Auth {
    Auth { username: username.map(String::from), password: password.map(|p| Secret(p.into())) }
}

#[test]
fn one_server_by_url_with_credentials_database_and_tls() {
    assert_eq!(
        target("redis://h").unwrap(),
        Target {
            topology: Topology::Single(node("h", 6379)),
            tls: Tls::Off,
            auth: Auth::default(),
            db: 0,
            sentinel_auth: Auth::default()
        }
    );
    let t = target("redis://u%3Ax:p%40ss%2F@10.0.0.5:1/2").unwrap();
    assert_eq!(
        (t.topology, t.auth, t.db),
        (Topology::Single(node("10.0.0.5", 1)), auth(Some("u:x"), Some("p@ss/")), 2)
    );
    let t = target("rediss://:pw@127.0.0.1:6380/?ca=/etc/redis/ca%20file.pem").unwrap();
    assert_eq!(t.tls, Tls::On { ca: Some("/etc/redis/ca file.pem".into()) });
    assert_eq!(t.auth, auth(None, Some("pw")));
    assert_eq!(target("rediss://h:1/3").unwrap().tls, Tls::On { ca: None });
    assert_eq!(target("rediss://h/#insecure").unwrap().tls, Tls::Insecure);
    assert_eq!(target("redis://[::1]:7000/").unwrap().topology, Topology::Single(node("::1", 7000)));
    assert_eq!(target("redis://[::1]").unwrap().topology, Topology::Single(node("::1", 6379)));
    assert_eq!(target("redis://user@h/").unwrap().auth, auth(Some("user"), None));
}

#[test]
fn cluster_urls_name_each_seed_node_with_the_credentials() {
    let t = target("rediss+cluster://u:p@a:1,b:2").unwrap();
    assert_eq!(t.topology, Topology::Cluster(vec![node("a", 1), node("b", 2)]));
    assert_eq!((t.auth, t.tls), (auth(Some("u"), Some("p")), Tls::On { ca: None }));
    let t = target("redis+cluster://a:1,b/0").unwrap();
    assert_eq!((t.topology, t.tls, t.db), (Topology::Cluster(vec![node("a", 1), node("b", 6379)]), Tls::Off, 0));
    assert_eq!(target("rediss+cluster://a:1/?ca=/ca.pem").unwrap().tls, Tls::On { ca: Some("/ca.pem".into()) });
}

#[test]
fn sentinel_urls_name_the_sentinels_the_service_and_both_credentials() {
    let t = target("redis+sentinel://:pw@s1,s2:26380/mymaster").unwrap();
    assert_eq!(
        t.topology,
        Topology::Sentinel { sentinels: vec![node("s1", 26379), node("s2", 26380)], service: "mymaster".into() }
    );
    assert_eq!((t.auth, t.db, t.tls, t.sentinel_auth), (auth(None, Some("pw")), 0, Tls::Off, Auth::default()));
    let t =
        target("rediss+sentinel://u:p@[fd00::1]:5000/svc/4/?sentinel_username=sen&sentinel_password=x%2By+z&ca=/c.pem")
            .unwrap();
    assert_eq!(t.topology, Topology::Sentinel { sentinels: vec![node("fd00::1", 5000)], service: "svc".into() });
    assert_eq!((t.db, t.tls), (4, Tls::On { ca: Some("/c.pem".into()) }));
    assert_eq!((t.auth, t.sentinel_auth), (auth(Some("u"), Some("p")), auth(Some("sen"), Some("x+y+z"))));
    assert_eq!(target("rediss+sentinel://s/m#insecure").unwrap().tls, Tls::Insecure);
}

#[test]
fn bad_urls_are_refused_with_the_reason_and_without_the_password() {
    for (url, reason) in [
        ("http://:hunter2@h/", "unknown scheme"),
        ("redis+unix://:hunter2@h/", "unknown scheme"),
        (":hunter2@h:6379", "not a Redis URL"),
        ("redis://:hunter2@", "a host is missing"),
        ("redis+cluster://:hunter2@", "a host is missing"),
        ("redis://:hunter2@a,b/", "one host:port"),
        ("redis://:hunter2@h/x", "not a database number"),
        ("redis://:hunter2@h/-1", "not a database number"),
        ("redis://:hunter2@h/1/2", "at most /<db>"),
        ("redis://:hunter2@h:0/", "not a port"),
        ("redis://:hunter2@h:99999/", "not a port"),
        ("redis://:hunter2@h:/", "not a port"),
        ("redis://:hunter2@::1/", "IPv6 address in [ ]"),
        ("redis://:hunter2@[::1/", "lacks its ]"),
        ("redis://:hunter2@[nope]/", "not an IPv6 address"),
        ("redis://:hunter2@h%20x/", "not a host name"),
        ("redis+cluster://:hunter2@a:1/3", "only database 0"),
        ("redis://:hunter2@h/?ca=/ca.pem", "TLS (rediss…://) URLs only"),
        ("rediss://:hunter2@h/?ca=", "ca names no file"),
        ("rediss://:hunter2@h/?ca=/a&ca=/b", "ca is given twice"),
        ("redis://:hunter2@h/?protocol=resp3", "unknown parameter \"protocol\""),
        ("redis://:hunter2@h/?sentinel_password=hunter2", "redis+sentinel:// URLs only"),
        ("redis+sentinel://:hunter2@s", "/<service name>[/<db>]"),
        ("redis+sentinel://:hunter2@s/m/1/2", "/<service name>[/<db>]"),
        ("redis+sentinel://s/m/x?sentinel_password=hunter2", "not a database number"),
        ("redis+sentinel://s/m?sentinel_password=hunter2&sentinel_password=hunter2", "given twice"),
        ("rediss://:hunter2@h/?ca=/ca.pem#insecure", "cannot go with ca"),
        ("redis://:hunter2@h/#insecure", "TLS (rediss…://) URLs only"),
        ("rediss://:hunter2@h/#verify", "the only fragment is #insecure"),
        ("redis://:%FF@h/", "the password is not UTF-8"),
        ("redis://u:hunter2/x@h:1/", "percent-encode"),
        ("redis://:hunter2?x@h:1/", "percent-encode"),
        ("redis://:hunter2#x@h:1/", "percent-encode"),
        ("redis+sentinel://:hunter2/x@s/m", "percent-encode"),
    ] {
        let e = target(url).unwrap_err();
        assert!(e.contains(reason), "{url}: {e}");
        assert!(!e.contains("hunter2"), "{url}: {e}");
    }
}

#[test]
fn urls_are_printed_without_credentials() {
    assert_eq!(Target::redact("redis://:hunter2@10.0.0.5:6379/0"), "redis://***@10.0.0.5:6379/0");
    assert_eq!(Target::redact("rediss://h:1/?ca=/ca.pem#insecure"), "rediss://h:1/?ca=/ca.pem#insecure");
    assert_eq!(
        Target::redact("redis+sentinel://u:hunter2@s1,s2/m?sentinel_username=s&sentinel_password=hunter2"),
        "redis+sentinel://***@s1,s2/m?sentinel_username=s&sentinel_password=***"
    );
    // An unescaped `/`, `?` or `#` in the password: hidden all the same.
    for url in ["redis://:hun/ter2@h/", "redis://:hun?ter2@h/", "redis://:hun#ter2@h/"] {
        assert_eq!(Target::redact(url), "redis://***@h/", "{url}");
    }
    assert_eq!(Target::redact("hunter2@h"), "(not a URL)");
    // A sentinel password holding an unescaped `&` or `#`: nothing of it is printed, by the
    // redaction or by the error that refuses the URL.
    for (url, printed) in [
        ("redis+sentinel://s/m?sentinel_password=hun&ter2", "redis+sentinel://s/m?sentinel_password=***"),
        ("redis+sentinel://s/m?sentinel_password=hun#ter2", "redis+sentinel://s/m?sentinel_password=***"),
    ] {
        assert_eq!(Target::redact(url), printed, "{url}");
        let error = target(url).unwrap_err();
        assert!(!error.contains("ter2"), "{error}");
    }
    let debug = format!("{:?}", target("redis+sentinel://u:hunter2@s/m?sentinel_password=hunter2").unwrap());
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn the_ca_file_is_read_at_connect_and_a_bad_one_is_named() {
    let dir = std::env::temp_dir().join(format!("mizan-conn-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certificates = |path: &std::path::Path| {
        let url = format!("rediss://:hunter2@h/?ca={}", path.display());
        target(&url).unwrap().certificates().map(|c| c.is_some())
    };
    let missing = dir.join("missing.pem");
    let e = certificates(&missing).unwrap_err();
    assert!(e.contains(&missing.display().to_string()) && e.contains("No such file"), "{e}");
    let text = dir.join("text.pem");
    std::fs::write(&text, "not a certificate\n").unwrap();
    let e = certificates(&text).unwrap_err();
    assert!(e.contains(&text.display().to_string()) && e.contains("no PEM certificate"), "{e}");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nbm90IERFUg==\n-----END CERTIFICATE-----\n").unwrap();
    let e = certificates(&junk).unwrap_err();
    assert!(e.contains(&junk.display().to_string()), "{e}");
    assert!(target("rediss://h/").unwrap().certificates().unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
