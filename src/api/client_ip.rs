//! Who the client is, as far as per-client join limits are concerned: the address a trusted proxy
//! wrote into `client_ip_header`, or the TCP peer, counted by network (an IPv4 /24 or an IPv6 /64 by
//! default) so rotating through the addresses one host owns gains nothing.
//!
//! Proxies *append* to `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for`, AWS ALB), so its
//! first entry is whatever the client sent. Only the entries the trusted proxies added can be
//! believed: the one `trusted_proxies` places from the right, or — with `trusted_proxy_cidrs` —
//! the rightmost entry that is not one of the proxies. A header that does not fit (too few
//! entries, not an address) is ignored in favour of the TCP peer.

use std::net::{IpAddr, Ipv4Addr};

use axum::http::{HeaderMap, HeaderName};

use crate::config::Config;
use crate::net::{Cidr, canonical, mask};

pub struct ClientIdentity {
    header: Option<HeaderName>,
    trusted_proxies: usize,
    trusted: Vec<Cidr>,
    v4_prefix: u8,
    v6_prefix: u8,
}

impl ClientIdentity {
    pub fn from_config(cfg: &Config) -> Result<Self, String> {
        let header = match cfg.client_ip_header.trim() {
            "" => None,
            h => Some(HeaderName::try_from(h).map_err(|_| format!("client_ip_header {h:?} is not a header name"))?),
        };
        let trusted = Cidr::parse_list(&cfg.trusted_proxy_cidrs)?;
        Ok(Self {
            header,
            trusted_proxies: cfg.trusted_proxies as usize,
            trusted,
            v4_prefix: cfg.join_subnet_v4_prefix.min(32),
            v6_prefix: cfg.join_subnet_v6_prefix.min(128),
        })
    }

    /// The client's address (see the module header).
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let peer = canonical(peer);
        let Some(name) = &self.header else {
            return peer;
        };
        let trusted = |ip: IpAddr| self.trusted.iter().any(|c| c.contains(ip));
        if !self.trusted.is_empty() && !trusted(peer) {
            return peer;
        }
        // Every instance of the header, in order, as one list (proxies may add a second line).
        let entries: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let parse = |e: &str| -> Option<IpAddr> {
            // "[v6]:port", "v4:port" and bare addresses.
            let e = e.strip_prefix('[').map_or(e, |r| r.split(']').next().unwrap_or(r));
            e.parse::<IpAddr>()
                .ok()
                .or_else(|| {
                    e.rsplit_once(':')
                        .and_then(|(a, _)| a.parse::<Ipv4Addr>().ok().map(IpAddr::V4))
                })
                .map(canonical)
        };
        let chosen = if self.trusted.is_empty() {
            let n = self.trusted_proxies.max(1);
            entries.len().checked_sub(n).and_then(|i| parse(entries[i]))
        } else {
            let mut found = None;
            for e in entries.iter().rev() {
                match parse(e) {
                    Some(ip) if trusted(ip) => continue,
                    other => {
                        found = other;
                        break;
                    }
                }
            }
            found
        };
        chosen.unwrap_or(peer)
    }

    /// The network `ip` is counted in for per-client limits.
    pub fn subnet(&self, ip: IpAddr) -> IpAddr {
        match canonical(ip) {
            v4 @ IpAddr::V4(_) => mask(v4, self.v4_prefix),
            v6 => mask(v6, self.v6_prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(header: &str, proxies: u32, cidrs: &str) -> ClientIdentity {
        let cfg = Config {
            client_ip_header: header.into(),
            trusted_proxies: proxies,
            trusted_proxy_cidrs: cidrs.into(),
            ..Config::default()
        };
        ClientIdentity::from_config(&cfg).unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_a_header_setting_the_peer_is_the_client_whatever_the_request_says() {
        let id = identity("", 1, "");
        assert_eq!(id.client_ip(&xff(&["1.2.3.4"]), ip("10.0.0.9")), ip("10.0.0.9"));
    }

    #[test]
    fn the_entry_the_trusted_proxy_appended_wins_over_what_the_client_sent() {
        // client 203.0.113.7 sent "x-forwarded-for: 6.6.6.6"; nginx appended the real address
        let id = identity("x-forwarded-for", 1, "");
        assert_eq!(
            id.client_ip(&xff(&["6.6.6.6, 203.0.113.7"]), ip("10.0.0.2")),
            ip("203.0.113.7")
        );
        // the same as two header lines
        assert_eq!(
            id.client_ip(&xff(&["6.6.6.6", "203.0.113.7"]), ip("10.0.0.2")),
            ip("203.0.113.7")
        );
        // CDN then ALB: the client is two from the right
        let two = identity("x-forwarded-for", 2, "");
        let h = xff(&["6.6.6.6, 203.0.113.7, 198.51.100.1"]);
        assert_eq!(two.client_ip(&h, ip("10.0.0.2")), ip("203.0.113.7"));
        // too few entries for the configured proxies: the header is not believed
        assert_eq!(two.client_ip(&xff(&["203.0.113.7"]), ip("10.0.0.2")), ip("10.0.0.2"));
        // not an address: the peer
        assert_eq!(
            id.client_ip(&xff(&["1.1.1.1, nonsense"]), ip("10.0.0.2")),
            ip("10.0.0.2")
        );
        // ports and brackets as some proxies write them
        assert_eq!(
            id.client_ip(&xff(&["203.0.113.7:5555"]), ip("10.0.0.2")),
            ip("203.0.113.7")
        );
        assert_eq!(
            id.client_ip(&xff(&["[2001:db8::1]:443"]), ip("10.0.0.2")),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn with_trusted_cidrs_the_rightmost_untrusted_entry_is_the_client_and_only_proxies_are_believed() {
        let id = identity("x-forwarded-for", 1, "10.0.0.0/8, fd00::/8");
        let h = xff(&["6.6.6.6, 203.0.113.7, 10.1.1.1, 10.2.2.2"]);
        assert_eq!(id.client_ip(&h, ip("10.0.0.2")), ip("203.0.113.7"));
        // a peer outside the proxies' ranges sent the header itself: ignored
        assert_eq!(id.client_ip(&h, ip("198.51.100.9")), ip("198.51.100.9"));
        // only proxies in the list: the peer
        assert_eq!(id.client_ip(&xff(&["10.1.1.1"]), ip("10.0.0.2")), ip("10.0.0.2"));
    }

    #[test]
    fn clients_are_counted_by_network() {
        let id = identity("", 1, "");
        assert_eq!(id.subnet(ip("203.0.113.7")), ip("203.0.113.0"));
        assert_eq!(id.subnet(ip("203.0.113.200")), ip("203.0.113.0"));
        assert_ne!(id.subnet(ip("203.0.114.7")), ip("203.0.113.0"));
        assert_eq!(id.subnet(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(id.subnet(ip("::ffff:203.0.113.9")), ip("203.0.113.0"));
    }
}
