//! The server's configuration: one TOML file, every key defaulted, any key overridable by an
//! environment variable `ESTUARY_<SECTION>__<KEY>`. Errors name the file (or variable), the
//! key, and what is wrong with it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "ESTUARY_";
/// Environment variables with the prefix that are not configuration keys.
const ENV_NOT_KEYS: &[&str] = &["ESTUARY_CONFIG"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Matrix server name (the part after `:` in user IDs); may carry a port.
    pub server_name: String,
    /// Where the server keeps its files: the SQLite database, TLS material, the lock file.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    pub tls: TlsConfig,
    pub matrix: MatrixConfig,
    pub federation: FederationConfig,
    pub xmpp: XmppConfig,
    pub privacy: PrivacyConfig,
    pub contact: ContactConfig,
    pub media: MediaConfig,
    pub rate_limits: RateLimitsConfig,
    pub logging: LoggingConfig,
}

/// A token bucket: `burst` actions at once, refilled at `per_second`. `per_second = 0`
/// switches the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Login attempts, per client address and per account.
    pub login: RateLimit,
    /// Registrations, per client address.
    pub registration: RateLimit,
    /// Events sent, per user.
    pub message: RateLimit,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            login: RateLimit {
                per_second: 0.5,
                burst: 10.0,
            },
            registration: RateLimit {
                per_second: 0.2,
                burst: 5.0,
            },
            message: RateLimit {
                per_second: 10.0,
                burst: 100.0,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// "" = `sqlite://<data_dir>/estuary.db`; or `sqlite://PATH`, or `postgres://...`.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub open: bool,
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; "" (with `key` "") = a self-signed certificate in data_dir.
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatrixConfig {
    pub client_listen: Vec<SocketAddr>,
    pub federation_listen: Vec<SocketAddr>,
    /// Largest request body accepted on the client API, in bytes (larger: `M_TOO_LARGE`).
    pub max_request_bytes: usize,
    /// The URL clients reach the client API at, served in `/.well-known/matrix/client`;
    /// "" = that document is not served.
    pub public_base_url: String,
    /// `host:port` served in `/.well-known/matrix/server` to delegate federation; "" = not
    /// served (peers then use server_name, port 8448 by default).
    pub well_known_server: String,
    /// New private rooms (private_chat, trusted_private_chat presets) and DMs get
    /// `m.room.encryption` (megolm) unless the creator's initial state says otherwise.
    pub encrypt_private_rooms: bool,
}

impl Default for MatrixConfig {
    fn default() -> Self {
        Self {
            client_listen: vec![SocketAddr::from(([127, 0, 0, 1], 8008))],
            federation_listen: vec![SocketAddr::from(([0, 0, 0, 0], 8448))],
            max_request_bytes: 1024 * 1024,
            public_base_url: String::new(),
            well_known_server: String::new(),
            encrypt_private_rooms: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    pub enabled: bool,
    pub verify_certificates: bool,
    pub allow_private_addresses: bool,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            verify_certificates: true,
            allow_private_addresses: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XmppConfig {
    /// "" = the host part of `server_name`.
    pub domain: String,
    /// "" = `conference.` + domain.
    pub muc_domain: String,
    pub c2s_listen: Vec<SocketAddr>,
    pub c2s_tls_listen: Vec<SocketAddr>,
    pub s2s_listen: Vec<SocketAddr>,
    /// Peer domain -> "host:port", bypassing DNS.
    pub s2s_static_routes: BTreeMap<String, String>,
    /// Offer SASL PLAIN (over TLS only), for clients without SCRAM. SCRAM is always offered.
    pub sasl_plain: bool,
    /// XEP-0198: how long a session whose connection was lost stays resumable.
    pub sm_resume_seconds: u64,
}

impl Default for XmppConfig {
    fn default() -> Self {
        Self {
            domain: String::new(),
            muc_domain: String::new(),
            c2s_listen: vec![SocketAddr::from(([0, 0, 0, 0], 5222))],
            c2s_tls_listen: vec![SocketAddr::from(([0, 0, 0, 0], 5223))],
            s2s_listen: vec![SocketAddr::from(([0, 0, 0, 0], 5269))],
            s2s_static_routes: BTreeMap::new(),
            sasl_plain: true,
            sm_resume_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Log (and, where a feature needs it, store) client IP addresses. Off by default.
    pub log_ips: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Largest upload accepted, in bytes (larger: `M_TOO_LARGE`).
    pub max_upload_bytes: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 50 * 1024 * 1024,
        }
    }
}

/// How to reach the people who run the server, as URIs (`mailto:`, `xmpp:`, `https:`, or
/// `matrix:u/user:server`). Published to XMPP clients (XEP-0157) and Matrix clients
/// (`/.well-known/matrix/support`). Empty by default: nothing is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ContactConfig {
    pub admin: Vec<String>,
    pub abuse: Vec<String>,
    pub security: Vec<String>,
    pub support: Vec<String>,
    /// A web page about getting help with this server ("" = none).
    pub support_page: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".to_owned(),
            data_dir: PathBuf::from("./data"),
            database: DatabaseConfig::default(),
            registration: RegistrationConfig::default(),
            tls: TlsConfig::default(),
            matrix: MatrixConfig::default(),
            federation: FederationConfig::default(),
            xmpp: XmppConfig::default(),
            privacy: PrivacyConfig::default(),
            contact: ContactConfig::default(),
            media: MediaConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

/// `scheme:rest`, the scheme per RFC 3986 §3.1, no whitespace.
fn is_uri(s: &str) -> bool {
    s.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !s.chars().any(char::is_whitespace)
    })
}

/// A configuration problem, naming where it came from and which key is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {}{message}", key_prefix(.key))]
pub struct ConfigError {
    /// The file, or the environment variable, the bad value came from.
    pub origin: String,
    /// The dotted key (`database.url`), when the problem is with one key.
    pub key: Option<String>,
    pub message: String,
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default()
}

impl Config {
    /// Load the configuration: defaults, then the file (if any), then `ESTUARY_*`
    /// environment variables; validate it and fill in derived defaults.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let file_origin = file
            .map(|f| format!("config file {}", f.display()))
            .unwrap_or_else(|| "built-in defaults".to_owned());
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    origin: file_origin.clone(),
                    key: None,
                    message: format!("cannot read: {e}"),
                })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError {
                    origin: file_origin.clone(),
                    key: None,
                    message: format!("not valid TOML: {e}"),
                })?
            }
            None => toml::Table::new(),
        };

        // Which keys the environment set, so an error on one names the variable.
        let mut from_env: BTreeMap<String, String> = BTreeMap::new();
        let defaults = toml::Table::try_from(Config::default()).map_err(|e| ConfigError {
            origin: file_origin.clone(),
            key: None,
            message: format!("internal: defaults do not serialise: {e}"),
        })?;
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_KEYS.contains(&k.as_str()))
            .collect();
        env.sort();
        for (var, value) in env {
            let path: Vec<String> = var[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            let key = path.join(".");
            if path.iter().any(String::is_empty) {
                return Err(ConfigError {
                    origin: format!("environment variable {var}"),
                    key: Some(key),
                    message: "empty key segment; use ESTUARY_<SECTION>__<KEY>".to_owned(),
                });
            }
            let current = lookup(&table, &path).or_else(|| lookup(&defaults, &path));
            let value = env_value(&value, current);
            insert(&mut table, &path, value).map_err(|message| ConfigError {
                origin: format!("environment variable {var}"),
                key: Some(key.clone()),
                message,
            })?;
            from_env.insert(key, var);
        }

        let origin_of = |key: &str| -> String {
            from_env
                .iter()
                .find(|(k, _)| {
                    key == k.as_str() || key.starts_with(&format!("{k}.")) || key.starts_with(&format!("{k}["))
                })
                .map(|(_, var)| format!("environment variable {var}"))
                .unwrap_or_else(|| file_origin.clone())
        };

        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let mut key = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().to_owned();
            // serde reports an unknown field at its parent's path; name the field itself.
            if let Some(field) = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
            {
                if key == "." || key.is_empty() {
                    key = field.to_owned();
                } else if !key.ends_with(field) {
                    key = format!("{key}.{field}");
                }
                message = format!("unknown key (not a configuration setting; see docs/configuration.md). {message}");
            }
            ConfigError {
                origin: origin_of(&key),
                key: Some(key),
                message,
            }
        })?;
        config.validated().map_err(|(key, message)| ConfigError {
            origin: origin_of(key),
            key: Some(key.to_owned()),
            message,
        })
    }

    /// Check values serde cannot, and fill in the derived defaults ("" = computed).
    fn validated(mut self) -> Result<Self, (&'static str, String)> {
        check_server_name(&self.server_name).map_err(|m| ("server_name", m))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(("data_dir", "must not be empty".to_owned()));
        }
        if self.media.max_upload_bytes == 0 {
            return Err(("media.max_upload_bytes", "must be at least 1".to_owned()));
        }
        if self.database.url.is_empty() {
            self.database.url = format!("sqlite://{}", self.data_dir.join("estuary.db").display());
        } else {
            estuary_store::check_url(&self.database.url).map_err(|m| ("database.url", m))?;
        }
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            let key = if self.tls.cert.is_empty() {
                "tls.cert"
            } else {
                "tls.key"
            };
            return Err((
                key,
                "tls.cert and tls.key must be set together (or both left empty for a self-signed certificate)"
                    .to_owned(),
            ));
        }
        for (key, uris) in [
            ("contact.admin", &self.contact.admin),
            ("contact.abuse", &self.contact.abuse),
            ("contact.security", &self.contact.security),
            ("contact.support", &self.contact.support),
        ] {
            if let Some(bad) = uris.iter().find(|u| !is_uri(u)) {
                return Err((
                    key,
                    format!("{bad:?} is not a URI (use mailto:, xmpp:, https: or matrix:u/)"),
                ));
            }
        }
        if !self.contact.support_page.is_empty() && !self.contact.support_page.starts_with("https://") {
            return Err(("contact.support_page", "must be an https:// URL or empty".to_owned()));
        }
        for (key, limit) in [
            ("rate_limits.login", self.rate_limits.login),
            ("rate_limits.registration", self.rate_limits.registration),
            ("rate_limits.message", self.rate_limits.message),
        ] {
            if !(limit.per_second.is_finite() && limit.burst.is_finite()) || limit.per_second < 0.0 {
                return Err((key, "per_second must be a number >= 0 (0 = no limit)".to_owned()));
            }
            if limit.per_second > 0.0 && limit.burst < 1.0 {
                return Err((key, "burst must be at least 1".to_owned()));
            }
        }
        if self.registration.tokens.iter().any(String::is_empty) {
            return Err((
                "registration.tokens",
                "a registration token must not be empty".to_owned(),
            ));
        }
        if self.xmpp.domain.is_empty() {
            self.xmpp.domain = host_of(&self.server_name).to_ascii_lowercase();
        } else {
            check_domain(&self.xmpp.domain).map_err(|m| ("xmpp.domain", m))?;
        }
        if self.xmpp.muc_domain.is_empty() {
            self.xmpp.muc_domain = format!("conference.{}", self.xmpp.domain);
        } else {
            check_domain(&self.xmpp.muc_domain).map_err(|m| ("xmpp.muc_domain", m))?;
        }
        let base = &self.matrix.public_base_url;
        if !(base.is_empty() || base.starts_with("https://") || base.starts_with("http://")) {
            return Err(("matrix.public_base_url", format!("{base:?} is not an http(s) URL")));
        }
        if !self.matrix.well_known_server.is_empty() {
            check_server_name(&self.matrix.well_known_server).map_err(|m| ("matrix.well_known_server", m))?;
        }
        for (domain, route) in &self.xmpp.s2s_static_routes {
            check_domain(domain).map_err(|m| ("xmpp.s2s_static_routes", format!("{domain:?}: {m}")))?;
            check_host_port(route).map_err(|m| ("xmpp.s2s_static_routes", format!("{domain:?} = {route:?}: {m}")))?;
        }
        Ok(self)
    }

    /// The effective configuration as TOML (what `estuary check-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialise configuration: {e}\n"))
    }
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(p)?.as_table()?;
    }
    t.get(last)
}

fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".to_owned());
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a section, so it has no keys to set"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// Interpret an environment variable's text: as a plain string where the key holds a string,
/// otherwise as a TOML value (`true`, `8008`, `["127.0.0.1:8008"]`); text that is not valid
/// TOML stays a string, so the type error names the key.
fn env_value(text: &str, current: Option<&toml::Value>) -> toml::Value {
    if matches!(current, Some(toml::Value::String(_))) {
        return toml::Value::String(text.to_owned());
    }
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// The host part of a server name (`example.org:8448` -> `example.org`, `[::1]:8448` -> `[::1]`).
pub fn host_of(server_name: &str) -> &str {
    if server_name.starts_with('[') {
        return server_name.find(']').map_or(server_name, |i| &server_name[..=i]);
    }
    server_name.rsplit_once(':').map_or(server_name, |(h, _)| h)
}

/// Matrix spec, appendices "Server Name": `hostname [ ":" port ]`, where hostname is an
/// IPv4 literal, a bracketed IPv6 literal, or a DNS name of `[A-Za-z0-9.-]`, 1-255 chars.
fn check_server_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let host = host_of(name);
    let rest = &name[host.len()..];
    if let Some(port) = rest.strip_prefix(':') {
        match port.parse::<u16>() {
            Ok(p) if p > 0 && !port.starts_with('0') => {}
            _ => {
                return Err(format!("{name:?}: port {port:?} is not a number from 1 to 65535"));
            }
        }
    } else if !rest.is_empty() {
        return Err(format!("{name:?} is not `host` or `host:port`"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        return if ok {
            Ok(())
        } else {
            Err(format!("{host:?} is not a valid IPv6 literal"))
        };
    }
    check_domain(host).map_err(|m| format!("{name:?}: {m}"))
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens (RFC 1123 §2.1);
/// also accepts an IPv4 literal, which has the same shape.
fn check_domain(host: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 255 || !host.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is not a valid host name (dot-separated labels of letters, digits and inner '-')"
        ));
    }
    Ok(())
}

fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected \"host:port\"")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_err() {
        check_domain(host)?;
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("port {port:?} is not a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile_dir();
        let path = dir.join("estuary.toml");
        std::fs::write(&path, text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let r = Config::load(Some(&path), env);
        std::fs::remove_dir_all(&dir).ok();
        r
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "estuary-config-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn defaults_are_filled_in() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.database.url, "sqlite://./data/estuary.db");
        assert_eq!(c.xmpp.domain, "localhost");
        assert_eq!(c.xmpp.muc_domain, "conference.localhost");
        assert_eq!(c.matrix.client_listen, vec!["127.0.0.1:8008".parse().unwrap()]);
    }

    #[test]
    fn file_then_env_override() {
        let c = load_str(
            "server_name = \"example.org:8448\"\n[registration]\nopen = false\n",
            &[
                ("ESTUARY_REGISTRATION__OPEN", "true"),
                ("ESTUARY_DATABASE__URL", "postgres://u@localhost/db"),
                ("ESTUARY_MATRIX__CLIENT_LISTEN", "[\"127.0.0.1:1\", \"[::1]:2\"]"),
                ("ESTUARY_CONFIG", "ignored.toml"),
            ],
        )
        .unwrap();
        assert!(c.registration.open);
        assert_eq!(c.database.url, "postgres://u@localhost/db");
        assert_eq!(c.matrix.client_listen.len(), 2);
        assert_eq!(c.xmpp.domain, "example.org");
    }

    #[test]
    fn a_string_key_takes_env_text_verbatim() {
        let c = load_str("", &[("ESTUARY_SERVER_NAME", "true.example")]).unwrap();
        assert_eq!(c.server_name, "true.example");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load_str("[database]\nurl = \"\"\nmax_conns = 3\n", &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("database.max_conns"), "{e}");
        assert!(e.to_string().contains("estuary.toml"), "{e}");
        let e = load_str("servr_name = \"x\"\n", &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("servr_name"), "{e}");
    }

    #[test]
    fn bad_type_is_named() {
        let e = load_str("[registration]\nopen = \"yes\"\n", &[]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("registration.open"), "{e}");
        let e = load_str("", &[("ESTUARY_REGISTRATION__OPEN", "maybe")]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("registration.open"), "{e}");
        assert!(e.origin.contains("ESTUARY_REGISTRATION__OPEN"), "{e}");
        let e = load_str("[matrix]\nclient_listen = [\"localhost\"]\n", &[]).unwrap_err();
        assert!(e.key.as_deref().unwrap().starts_with("matrix.client_listen"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, key) in [
            ("[database]\nurl = \"mysql://x\"\n", "database.url"),
            ("server_name = \"bad name\"\n", "server_name"),
            ("server_name = \"example.org:99999\"\n", "server_name"),
            ("[tls]\ncert = \"/x.pem\"\n", "tls.key"),
            ("[xmpp]\ndomain = \"-\"\n", "xmpp.domain"),
            (
                "[xmpp.s2s_static_routes]\n\"example.org\" = \"nohost\"\n",
                "xmpp.s2s_static_routes",
            ),
        ] {
            let e = load_str(text, &[]).expect_err(text);
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        }
    }

    #[test]
    fn bad_toml_names_the_file() {
        let e = load_str("server_name = \n", &[]).unwrap_err();
        assert!(e.to_string().contains("not valid TOML"), "{e}");
    }

    #[test]
    fn server_names() {
        for ok in [
            "localhost",
            "example.org",
            "example.org:8448",
            "1.2.3.4",
            "[::1]:8448",
            "[1234:5678::abcd]",
        ] {
            check_server_name(ok).unwrap();
        }
        for bad in [
            "",
            "a b",
            "example.org:",
            "example.org:0",
            "[::1",
            "[zz]",
            "ex..org",
            "x:80:80",
        ] {
            assert!(check_server_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let c = Config::load(None, Vec::new()).unwrap();
        let text = c.to_toml();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }
}
