//! Where the operator may send a request: by default only to Azure Communication Services. A
//! connection names its endpoint (in a connection string, or `spec.endpoint`), and a tenant
//! writes connections; without this rule the operator would send signed requests and bearer
//! tokens to any host and port a tenant names, and so scan and read internal services for it.
//!
//! The allowed endpoints are rules over the URL's parsed host and port (never its text):
//! `*.communication.azure.com` (any name under the domain, not the domain itself),
//! `emulator.local` (that name only), `10.0.0.7` or `[fd00::7]` (that address), each with
//! `:443` implied, or `:<port>`, or `:*` for any port. An installer adds rules with
//! `--allowed-endpoints` (the chart's `allowedEndpoints`); ACS's own domains are always
//! allowed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use url::{Host, Url};

/// The domains under which ACS resources have their endpoints: the public cloud, Azure
/// Government and Azure operated by 21Vianet (China). Names may have more labels
/// (`<name>.<geography>.communication.azure.com`).
pub const ACS_DOMAINS: [&str; 3] = [
    "communication.azure.com",
    "communication.azure.us",
    "communication.azure.cn",
];

/// The port a rule without one allows: https's.
const HTTPS_PORT: u16 = 443;

/// Which hosts a rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// Exactly this DNS name (ASCII, lowercase, no trailing dot).
    Name(String),
    /// Any name with at least one more label under this domain, not the domain itself.
    Under(String),
    /// Exactly this address.
    Address(IpAddr),
}

/// Which ports a rule admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    Exactly(u16),
    Any,
}

/// One allowed endpoint: a host rule and a port rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRule {
    host: HostRule,
    port: PortRule,
    /// As written, for messages and `--help`.
    text: String,
}

/// Why a rule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowed endpoint {text:?}: {why}")]
pub struct RuleError {
    text: String,
    why: &'static str,
}

impl FromStr for EndpointRule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, RuleError> {
        let fail = |why| RuleError {
            text: text.to_string(),
            why,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(fail("empty"));
        }
        if trimmed.contains("://") || trimmed.contains(['/', '@', '?', '#']) {
            return Err(fail("write a host and an optional port, not a URL"));
        }
        // The port is after the last ':' unless that ':' is inside an IPv6 literal.
        let (host, port) = match trimmed.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') && !host.ends_with(':') => {
                let port = match port {
                    "*" => PortRule::Any,
                    p => PortRule::Exactly(
                        p.parse::<u16>()
                            .ok()
                            .filter(|p| *p != 0)
                            .ok_or_else(|| fail("the port is not 1-65535 or *"))?,
                    ),
                };
                (host, port)
            }
            _ => (trimmed, PortRule::Exactly(HTTPS_PORT)),
        };
        let (subdomains, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if host.contains('*') {
            return Err(fail(
                "a wildcard is allowed only as a whole first label (*.)",
            ));
        }
        let host = match Host::parse(host).map_err(|_| fail("not a host name or address"))? {
            Host::Domain(name) => {
                let name = name.strip_suffix('.').unwrap_or(&name).to_string();
                if name.is_empty() || name.split('.').any(str::is_empty) {
                    return Err(fail("a host name has an empty label"));
                }
                if subdomains {
                    HostRule::Under(name)
                } else {
                    HostRule::Name(name)
                }
            }
            _ if subdomains => return Err(fail("*. needs a domain, not an address")),
            Host::Ipv4(a) => HostRule::Address(IpAddr::V4(a)),
            Host::Ipv6(a) => HostRule::Address(IpAddr::V6(a)),
        };
        Ok(Self {
            host,
            port,
            text: trimmed.to_string(),
        })
    }
}

impl fmt::Display for EndpointRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl EndpointRule {
    fn admits(&self, host: &Host<&str>, port: u16) -> bool {
        let port_ok = match self.port {
            PortRule::Any => true,
            PortRule::Exactly(p) => p == port,
        };
        let host_ok = match (&self.host, host) {
            (HostRule::Name(rule), Host::Domain(name)) => canonical(name) == Some(rule.as_str()),
            (HostRule::Under(rule), Host::Domain(name)) => canonical(name)
                .and_then(|n| n.strip_suffix(rule.as_str()))
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            (HostRule::Address(rule), Host::Ipv4(a)) => *rule == IpAddr::V4(*a),
            (HostRule::Address(rule), Host::Ipv6(a)) => *rule == IpAddr::V6(*a),
            _ => false,
        };
        port_ok && host_ok
    }
}

/// A parsed DNS name as a rule compares it: one trailing dot dropped (the same host), `None`
/// when a label is empty. The URL parser already lowercased it and applied IDNA.
fn canonical(name: &str) -> Option<&str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty() && !name.split('.').any(str::is_empty)).then_some(name)
}

/// Why an endpoint is refused. The message names the host (the tenant's own input), never
/// anything a server said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRefusal {
    #[error("endpoint {0} carries credentials (user@); an ACS endpoint never does")]
    Credentials(String),
    #[error("endpoint {0} has no host")]
    NoHost(String),
    #[error(
        "endpoint {host}:{port} is not an ACS endpoint (*.{acs}, port 443) nor one the \
         operator's installer allowed (--allowed-endpoints); no request is sent to it",
        acs = ACS_DOMAINS[0]
    )]
    NotAllowed { host: String, port: u16 },
}

/// The endpoints connections may name: ACS's domains, and what the installer added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedEndpoints {
    rules: Vec<EndpointRule>,
}

impl Default for AllowedEndpoints {
    /// ACS's domains only, on port 443.
    fn default() -> Self {
        Self::acs()
    }
}

impl AllowedEndpoints {
    /// ACS's domains only, on port 443.
    pub fn acs() -> Self {
        let rules = ACS_DOMAINS
            .iter()
            .map(|d| {
                format!("*.{d}")
                    .parse()
                    .expect("ACS's domains are valid rules")
            })
            .collect();
        Self { rules }
    }

    /// These rules besides ACS's domains.
    pub fn acs_and(extra: impl IntoIterator<Item = EndpointRule>) -> Self {
        let mut allowed = Self::acs();
        allowed.rules.extend(extra);
        allowed
    }

    /// Parses each rule of `extra` and adds them to ACS's domains (for tests and tools that
    /// run against a local emulator: `acs_and_parsed(["localhost:*", "127.0.0.1:*"])`).
    pub fn acs_and_parsed<'a>(extra: impl IntoIterator<Item = &'a str>) -> Result<Self, RuleError> {
        let extra = extra
            .into_iter()
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::acs_and(extra))
    }

    /// Whether a request may go to `endpoint`: checked on the parsed URL that the client
    /// sends to, so what is checked is where the request goes.
    pub fn check(&self, endpoint: &Url) -> Result<(), EndpointRefusal> {
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(EndpointRefusal::Credentials(
                endpoint.host_str().unwrap_or_default().to_string(),
            ));
        }
        let Some(host) = endpoint.host() else {
            return Err(EndpointRefusal::NoHost(endpoint.scheme().to_string()));
        };
        let port = endpoint.port_or_known_default().unwrap_or(0);
        if self.rules.iter().any(|r| r.admits(&host, port)) {
            return Ok(());
        }
        Err(EndpointRefusal::NotAllowed {
            host: host.to_string(),
            port,
        })
    }

    /// The rules, as written, for the startup log.
    pub fn rules(&self) -> impl Iterator<Item = &EndpointRule> {
        self.rules.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(extra: &[&str]) -> AllowedEndpoints {
        AllowedEndpoints::acs_and_parsed(extra.iter().copied()).unwrap()
    }

    /// (endpoint, extra rules, allowed?). Each URL is parsed as the connection-string and
    /// spec.endpoint paths parse it, then checked.
    #[test]
    fn which_endpoints_are_allowed() {
        let cases: &[(&str, &[&str], bool)] = &[
            // ACS's clouds, any depth of name under the domain, port 443 only.
            ("https://r.communication.azure.com/", &[], true),
            ("https://r.unitedstates.communication.azure.com/", &[], true),
            ("https://r.communication.azure.us/", &[], true),
            ("https://r.communication.azure.cn/", &[], true),
            ("https://r.communication.azure.com:443/", &[], true),
            ("https://r.communication.azure.com:8443/", &[], false),
            ("http://r.communication.azure.com/", &[], false), // port 80
            ("https://communication.azure.com/", &[], false),  // the domain itself
            ("https://r.communication.azure.de/", &[], false), // Azure Germany closed
            // Look-alikes.
            (
                "https://r.communication.azure.com.evil.example/",
                &[],
                false,
            ),
            ("https://rcommunication.azure.com/", &[], false),
            ("https://r-communication.azure.com/", &[], false),
            ("https://evil.example/r.communication.azure.com", &[], false),
            (
                "https://evil.example/?r.communication.azure.com",
                &[],
                false,
            ),
            ("https://evil.example#.communication.azure.com", &[], false),
            // Userinfo: the host is after '@'.
            (
                "https://r.communication.azure.com@evil.example/",
                &[],
                false,
            ),
            (
                "https://r.communication.azure.com:x@evil.example/",
                &[],
                false,
            ),
            ("https://u@r.communication.azure.com/", &[], false), // credentials refused too
            // Case and a trailing dot name the same host.
            ("https://R.Communication.AZURE.com/", &[], true),
            ("https://r.communication.azure.com./", &[], true),
            ("https://r.communication.azure.com../", &[], false),
            // IDNA: a dotless ı or fullwidth dots are mapped before matching.
            ("https://r.communicatıon.azure.com/", &[], false),
            (
                "https://r\u{3002}communication\u{3002}azure\u{3002}com/",
                &[],
                true,
            ),
            (
                "https://r.communication.azure.com\u{3002}evil.example/",
                &[],
                false,
            ),
            (
                "https://r%2Ecommunication.azure.com.evil.example/",
                &[],
                false,
            ),
            // IP literals, in any spelling, are never a domain.
            ("https://127.0.0.1/", &[], false),
            ("https://2130706433/", &[], false),
            ("https://0x7f.1/", &[], false),
            ("https://[::1]/", &[], false),
            ("https://169.254.169.254/", &[], false),
            // Installer's rules: exact names, ports, addresses.
            ("https://localhost:8443/", &["localhost:*"], true),
            ("https://localhost/", &["localhost"], true),
            ("https://localhost:8443/", &["localhost"], false),
            ("https://localhost:8443/", &["localhost:8443"], true),
            ("https://localhost:8444/", &["localhost:8443"], false),
            ("https://a.localhost:8443/", &["localhost:*"], false),
            ("http://127.0.0.1:9000/", &["127.0.0.1:*"], true),
            ("http://2130706433:9000/", &["127.0.0.1:*"], true), // the same address
            ("http://127.0.0.2:9000/", &["127.0.0.1:*"], false),
            ("https://[::1]:8443/", &["[::1]:*"], true),
            ("https://[::ffff:127.0.0.1]:8443/", &["127.0.0.1:*"], false),
            (
                "https://acs.internal.example/",
                &["*.internal.example"],
                true,
            ),
            ("https://internal.example/", &["*.internal.example"], false),
            (
                "https://ACS.Internal.Example./",
                &["*.internal.example."],
                true,
            ),
            ("https://xn--bcher-kva.example/", &["bücher.example"], true),
        ];
        for (endpoint, extra, expected) in cases {
            // A URL that does not parse never reaches the check: it is refused earlier.
            let verdict = Url::parse(endpoint)
                .map_err(|e| e.to_string())
                .and_then(|url| allowed(extra).check(&url).map_err(|e| e.to_string()));
            assert_eq!(
                verdict.is_ok(),
                *expected,
                "{endpoint} with {extra:?}: {verdict:?}"
            );
        }
    }

    #[test]
    fn refusals_say_which_host_and_port() {
        let url = Url::parse("https://10.0.0.5:5432/").unwrap();
        let refused = AllowedEndpoints::default().check(&url).unwrap_err();
        assert_eq!(
            refused,
            EndpointRefusal::NotAllowed {
                host: "10.0.0.5".into(),
                port: 5432
            }
        );
        assert!(refused.to_string().contains("10.0.0.5:5432"), "{refused}");
        let url = Url::parse("https://a.communication.azure.com@evil.example/").unwrap();
        assert!(matches!(
            AllowedEndpoints::default().check(&url),
            Err(EndpointRefusal::Credentials(_))
        ));
    }

    #[test]
    fn rules_that_cannot_mean_one_thing_are_refused() {
        for bad in [
            "",
            "https://localhost",
            "localhost/",
            "user@localhost",
            "localhost:0",
            "localhost:99999",
            "localhost:x",
            "a.*.example",
            "*example.com",
            "*.127.0.0.1",
            "a..example",
            "[::1",
            "::1",
        ] {
            assert!(bad.parse::<EndpointRule>().is_err(), "{bad:?} parsed");
        }
        for good in [
            "localhost",
            "localhost:*",
            "[::1]:8443",
            "[::1]",
            "*.example.com:8443",
        ] {
            assert!(good.parse::<EndpointRule>().is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn the_default_is_acs_only() {
        assert_eq!(AllowedEndpoints::default(), AllowedEndpoints::acs());
        let written: Vec<String> = AllowedEndpoints::default()
            .rules()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            written,
            [
                "*.communication.azure.com",
                "*.communication.azure.us",
                "*.communication.azure.cn"
            ]
        );
    }
}
