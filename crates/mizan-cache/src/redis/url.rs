//! Store URLs: what a Redis URL names ([`Target`], read by [`Target::parse`]) and how one may
//! be printed ([`Target::redact`]). Parsing reads no file and opens no connection; the
//! connections are `conn`'s.
//!
//! The URL forms ([`Target::FORMS`] lists them; docs/operations.md, "Redis", for operators):
//!
//! - `redis://[user:password@]host[:port][/db]`, `rediss://…` for TLS: one server.
//! - `redis+cluster://[user:password@]host:port[,host:port…]`, `rediss+cluster://…`: a
//!   cluster, named by some of its nodes (the others are discovered).
//! - `redis+sentinel://[user:password@]host[:port][,host[:port]…]/service[/db]`,
//!   `rediss+sentinel://…`: the master of `service`, as the sentinels at those addresses
//!   (port 26379 by default) know it. The credentials are the data nodes'; the sentinels'
//!   own, if they have any, are the query parameters `sentinel_username` and
//!   `sentinel_password`.
//!
//! With TLS, certificates are checked against the public roots built into the binary (the
//! same Mozilla list the origin client uses), or, given `?ca=/path/ca.pem`, against that CA
//! only. `#insecure` turns every check off: for local testing only. Credentials and
//! parameters are percent-decoded; [`Target::redact`] is how a URL may be printed.

use percent_encoding::percent_decode_str;
use redis::{Client, ConnectionAddr, ConnectionInfo, RedisConnectionInfo, TlsCertificates};
use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;

/// The query parameters a URL may carry.
const PARAMETERS: &str = "ca (rediss only), sentinel_username and sentinel_password (sentinel only)";

/// Why a URL with an `@` past its host is refused.
const AT_AFTER_HOST: &str =
    "an @ after the host: percent-encode @ / ? # in the user name and password (%40 %2F %3F %23)";

/// The port of a Redis server when the URL names none.
const REDIS_PORT: u16 = 6379;

/// The port of a sentinel when the URL names none.
const SENTINEL_PORT: u16 = 26379;

/// A password (or any secret): compared as usual, printed as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One server's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// A DNS name or an IP address (IPv6 without its brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

/// Which servers a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server.
    Single(Node),
    /// Seed nodes of a cluster.
    Cluster(Vec<Node>),
    /// Sentinels, and the name of the service (`sentinel monitor <name> …`) whose master the
    /// store uses.
    Sentinel {
        /// The sentinels, asked in this order.
        sentinels: Vec<Node>,
        /// The service (master) name.
        service: String,
    },
}

/// Whether and how a URL asks for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Plain TCP (`redis…://`).
    Off,
    /// TLS (`rediss…://`), the server's certificate checked against the built-in public
    /// roots, or against `ca` only when the URL names one (`?ca=`).
    On {
        /// A PEM file of the CA certificate(s) to trust instead of the public roots.
        ca: Option<PathBuf>,
    },
    /// TLS without any certificate check (`#insecure`): for local testing only.
    Insecure,
}

/// A user name and password (Redis ACL, or `requirepass` with no user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// The user, `None` for `default`.
    pub username: Option<String>,
    /// The password.
    pub password: Option<Secret>,
}

/// What a store URL names, read by [`Target::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The servers.
    pub topology: Topology,
    /// TLS, for every connection (with Sentinel: to the sentinels and to the data nodes).
    pub tls: Tls,
    /// The credentials for the data nodes.
    pub auth: Auth,
    /// The database number (0 for a cluster).
    pub db: i64,
    /// The sentinels' own credentials (`?sentinel_username=&sentinel_password=`).
    pub sentinel_auth: Auth,
}

/// Reads a store URL: [`Target::parse`].
pub fn target(url: &str) -> Result<Target, String> {
    Target::parse(url)
}

impl Target {
    /// The URL forms, for error messages.
    pub const FORMS: &str = "redis://[user:password@]host[:port][/db], rediss://… (TLS), \
         redis+cluster://[user:password@]host:port[,host:port…], rediss+cluster://…, \
         redis+sentinel://[user:password@]host[:port][,host[:port]…]/service[/db], rediss+sentinel://…";

    /// Reads a store URL (the forms in [`Target::FORMS`]). The error names the URL without its
    /// credentials and says what is wrong with it; it never holds a password. Reads no file:
    /// the `ca` file is read by [`Conn::open`](super::Conn::open).
    pub fn parse(url: &str) -> Result<Target, String> {
        let bad = |why: String| format!("{}: {why}", Self::redact(url));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(format!("not a Redis URL; the forms are {}", Self::FORMS)));
        };
        let (kind, tls) = match scheme {
            "redis" => (Kind::Single, false),
            "rediss" => (Kind::Single, true),
            "redis+cluster" => (Kind::Cluster, false),
            "rediss+cluster" => (Kind::Cluster, true),
            "redis+sentinel" => (Kind::Sentinel, false),
            "rediss+sentinel" => (Kind::Sentinel, true),
            _ => return Err(bad(format!("unknown scheme; the forms are {}", Self::FORMS))),
        };
        // A password with an unescaped `/`, `?` or `#` would be read as a host, a path or a
        // parameter, and could be echoed by an error below: refuse it first.
        if rest.find(['/', '?', '#']).is_some_and(|end| rest[end..].contains('@')) {
            return Err(bad(AT_AFTER_HOST.into()));
        }
        let (rest, fragment) = rest.split_once('#').map_or((rest, None), |(rest, f)| (rest, Some(f)));
        let (rest, query) = rest.split_once('?').map_or((rest, None), |(rest, q)| (rest, Some(q)));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = authority.rsplit_once('@').map_or((None, authority), |(u, h)| (Some(u), h));
        let auth = match userinfo {
            None => Auth::default(),
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').map_or((userinfo, None), |(u, p)| (u, Some(p)));
                Auth {
                    username: decode(user, "the user name").map_err(&bad)?.filter(|u| !u.is_empty()),
                    password: match password {
                        Some(p) => decode(p, "the password").map_err(&bad)?.filter(|p| !p.is_empty()).map(Secret),
                        None => None,
                    },
                }
            }
        };

        let default_port = if kind == Kind::Sentinel { SENTINEL_PORT } else { REDIS_PORT };
        let nodes = hosts.split(',').map(|h| node(h, default_port)).collect::<Result<Vec<_>, _>>().map_err(&bad)?;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (topology, db) = match kind {
            Kind::Single | Kind::Cluster => {
                let db = match segments.as_slice() {
                    [] => 0,
                    [db] => database(db).map_err(&bad)?,
                    _ => return Err(bad("the path is at most /<db>".into())),
                };
                if kind == Kind::Cluster {
                    if db != 0 {
                        return Err(bad("a cluster has only database 0".into()));
                    }
                    (Topology::Cluster(nodes), 0)
                } else {
                    let [node] = <[Node; 1]>::try_from(nodes).map_err(|_| {
                        bad("one host:port (a cluster is redis+cluster://, sentinels are redis+sentinel://)".into())
                    })?;
                    (Topology::Single(node), db)
                }
            }
            Kind::Sentinel => {
                let (service, db) = match segments.as_slice() {
                    [service] => (*service, 0),
                    [service, db] => (*service, database(db).map_err(&bad)?),
                    _ => return Err(bad("the path is /<service name>[/<db>]".into())),
                };
                let service = decode(service, "the service name").map_err(&bad)?.unwrap_or_default();
                (Topology::Sentinel { sentinels: nodes, service }, db)
            }
        };

        let mut ca = None;
        let mut sentinel_auth = Auth::default();
        // After a password, an unknown "parameter" may be the rest of a password holding an
        // unescaped `&`: it is not quoted in the error.
        let mut after_password = false;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value, &format!("the parameter {name}")).map_err(&bad)?;
            let sentinel = kind == Kind::Sentinel;
            let twice = match (name, value) {
                ("ca", _) if !tls => return Err(bad("ca applies to TLS (rediss…://) URLs only".into())),
                ("ca", None) => return Err(bad("ca names no file".into())),
                ("ca", Some(path)) => ca.replace(PathBuf::from(path)).is_some(),
                ("sentinel_username" | "sentinel_password", _) if !sentinel => {
                    return Err(bad(format!("{name} applies to redis+sentinel:// URLs only")));
                }
                ("sentinel_username", value) => std::mem::replace(&mut sentinel_auth.username, value).is_some(),
                ("sentinel_password", value) => {
                    std::mem::replace(&mut sentinel_auth.password, value.map(Secret)).is_some()
                }
                _ if after_password => {
                    return Err(bad(format!(
                        "a parameter after sentinel_password is not one of {PARAMETERS} (a password holding & or # must be percent-encoded)"
                    )));
                }
                _ => return Err(bad(format!("unknown parameter {name:?}; the parameters are {PARAMETERS}"))),
            };
            after_password |= name == "sentinel_password";
            if twice {
                return Err(bad(format!("{name} is given twice")));
            }
        }

        let tls = match (tls, fragment) {
            (false, None | Some("")) => Tls::Off,
            (true, None | Some("")) => Tls::On { ca },
            (true, Some("insecure")) if ca.is_none() => Tls::Insecure,
            (true, Some("insecure")) => {
                return Err(bad("#insecure checks no certificate: it cannot go with ca".into()));
            }
            (false, Some(_)) => return Err(bad("a fragment (#insecure) applies to TLS (rediss…://) URLs only".into())),
            (true, Some(_)) => return Err(bad("the only fragment is #insecure".into())),
        };
        Ok(Target { topology, tls, auth, db, sentinel_auth })
    }

    /// `url` as it may be printed: the user and password replaced by `***`, and the value of
    /// any query parameter whose name holds `pass` (`sentinel_password`) likewise. Works on
    /// any text, URL or not: what cannot be told apart is hidden.
    pub fn redact(url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else { return "(not a URL)".into() };
        // The user and password end at the last `@` of the authority; a password with an
        // unescaped `?` or `#` ends at a later `@`: hide up to the last `@` there is.
        let head_end = rest.find(['?', '#']).unwrap_or(rest.len());
        let at = rest[..head_end].rfind('@').or_else(|| rest.rfind('@'));
        let rest = match at {
            Some(at) => format!("***@{}", &rest[at + 1..]),
            None => rest.to_string(),
        };
        let (before_fragment, fragment) = rest.split_once('#').map_or((rest.as_str(), None), |(r, f)| (r, Some(f)));
        let mut out = format!("{scheme}://");
        match before_fragment.split_once('?') {
            None => out.push_str(before_fragment),
            Some((head, query)) => {
                out.push_str(head);
                out.push('?');
                // A password may hold an unescaped `&` or `#`: everything after a password
                // parameter's `=` is hidden, the rest of the query and the fragment included.
                let mut pairs = Vec::new();
                for pair in query.split('&') {
                    match pair.split_once('=') {
                        Some((name, _)) if name.to_ascii_lowercase().contains("pass") => {
                            pairs.push(format!("{name}=***"));
                            out.push_str(&pairs.join("&"));
                            return out;
                        }
                        _ => pairs.push(pair.to_string()),
                    }
                }
                out.push_str(&pairs.join("&"));
            }
        }
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
        out
    }

    /// How redis-rs reaches `node` with this target's TLS and data-node credentials (the
    /// CA's certificates, if any, are added by the client builders).
    pub(super) fn connection_info(&self, node: &Node) -> ConnectionInfo {
        ConnectionInfo {
            addr: self.addr(node),
            redis: RedisConnectionInfo {
                db: self.db,
                username: self.auth.username.clone(),
                password: self.auth.password.as_ref().map(|p| p.0.clone()),
                ..Default::default()
            },
        }
    }

    /// How redis-rs reaches `node` with this target's TLS: the address alone.
    pub(super) fn addr(&self, node: &Node) -> ConnectionAddr {
        let (host, port) = (node.host.clone(), node.port);
        match self.tls {
            Tls::Off => ConnectionAddr::Tcp(host, port),
            Tls::On { .. } => ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None },
            Tls::Insecure => ConnectionAddr::TcpTls { host, port, insecure: true, tls_params: None },
        }
    }

    /// The `ca` file's certificates, read and checked now; `None` without one.
    pub(super) fn certificates(&self) -> Result<Option<TlsCertificates>, String> {
        let Tls::On { ca: Some(path) } = &self.tls else { return Ok(None) };
        let bad = |why: String| format!("the CA file {}: {why}", path.display());
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
        }
        let certificates = TlsCertificates { client_tls: None, root_cert: Some(pem) };
        // Parses every certificate into a trust anchor, as each connection will.
        let probe = ConnectionInfo {
            addr: ConnectionAddr::TcpTls { host: "localhost".into(), port: 0, insecure: false, tls_params: None },
            redis: RedisConnectionInfo::default(),
        };
        Client::build_with_tls(probe, certificates.clone()).map_err(|e| bad(e.to_string()))?;
        Ok(Some(certificates))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Single,
    Cluster,
    Sentinel,
}

/// Percent-decodes `text` (`None` when empty); the error names `what`, never the text.
fn decode(text: &str, what: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    match percent_decode_str(text).decode_utf8() {
        Ok(decoded) => Ok(Some(decoded.into_owned())),
        Err(_) => Err(format!("{what} is not UTF-8 once percent-decoded")),
    }
}

/// `host[:port]` or `[ipv6][:port]`.
fn node(text: &str, default_port: u16) -> Result<Node, String> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) =
            bracketed.split_once(']').ok_or_else(|| format!("{text:?}: an IPv6 address lacks its ]"))?;
        host.parse::<Ipv6Addr>().map_err(|_| format!("{text:?} is not an IPv6 address"))?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(|| format!("{text:?}: a port follows a :"))?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => return Err(format!("{text:?}: write an IPv6 address in [ ]")),
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("a host is missing".into());
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')) {
        return Err(format!("{host:?} is not a host name or an IP address"));
    }
    let port = match port {
        None => default_port,
        Some(port) => port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{port:?} is not a port"))?,
    };
    Ok(Node { host: host.to_string(), port })
}

fn database(text: &str) -> Result<i64, String> {
    text.parse::<i64>().ok().filter(|db| *db >= 0).ok_or_else(|| format!("{text:?} is not a database number"))
}

#[cfg(test)]
mod tests;
