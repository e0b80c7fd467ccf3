//! Checking a resolved [`Config`] before anything starts: each setting in range, settings that
//! only make sense together, addresses that parse. A refusal names the setting and says why.

use super::*;

impl Config {
    /// Refuse a configuration a node cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, why: &str| {
            Err(ConfigError::Invalid {
                name,
                why: why.to_string(),
            })
        };
        use crate::ivs::token::{MAX_TTL_MINUTES, MIN_TTL_MINUTES};
        if !(MIN_TTL_MINUTES..=MAX_TTL_MINUTES).contains(&self.token_ttl_minutes) {
            return invalid("token_ttl_minutes", "IVS accepts 1 to 20160 minutes (14 days)");
        }
        if self.is_clustered() {
            if self.raft_addr.parse::<SocketAddr>().is_err() {
                return invalid(
                    "raft_addr",
                    "a cluster needs the address this node's Raft RPC listens on, as ip:port",
                );
            }
            if self.cluster_secret.chars().count() < 16 {
                return invalid(
                    "cluster_secret",
                    "a cluster needs a shared secret of at least 16 characters on every node",
                );
            }
            if self.key_encryption_key_file.as_os_str().is_empty() {
                return invalid(
                    "key_encryption_key_file",
                    "every node of a cluster opens the one replicated signing key: give each node the same key-encryption key file",
                );
            }
            if self.bootstrap_expect > 1 && self.join_addrs().is_empty() {
                return invalid("join", "bootstrap_expect above 1 needs the other nodes' Raft addresses");
            }
        } else if self.bootstrap_expect == 0 {
            return invalid("bootstrap_expect", "must be at least 1");
        }
        if !self.media_advertise_ip.trim().is_empty()
            && self.media_advertise_ip.trim().parse::<std::net::IpAddr>().is_err()
        {
            return invalid(
                "media_advertise_ip",
                "must be an IP address such as 192.168.1.20 (empty: the bind IP)",
            );
        }
        if let Err(why) = check_sdk_url(self.sdk_url.trim()) {
            return invalid("sdk_url", why);
        }
        if !self.sdk_dir.as_os_str().is_empty() && !self.sdk_dir.is_dir() {
            return invalid("sdk_dir", "is not a directory");
        }
        if !(1.0..=100.0).contains(&self.headroom_safety) {
            return invalid("headroom_safety", "must be between 1 and 100");
        }
        if self.replication_reconnect_window_secs > 300 {
            return invalid("replication_reconnect_window_secs", "IVS accepts 0 to 300 seconds");
        }
        if self.scaler_interval_ms < 50 {
            return invalid("scaler_interval_ms", "must be at least 50");
        }
        if self.session_lease_secs < 2 * self.presence_interval_secs.max(1) {
            return invalid("session_lease_secs", "must be at least twice presence_interval_secs");
        }
        if let Err(e) = crate::fleet::admission::validate_policy(&self.policy_seed(), self.min_lease_ms()) {
            let name = match &e {
                InputError::OutOfRange {
                    field: "seatsPerStage", ..
                } => "seats_per_stage",
                InputError::OutOfRange { field: "maxStages", .. } => "max_stages",
                InputError::OutOfRange {
                    field: "sessionLeaseSecs",
                    ..
                } => "session_lease_secs",
                InputError::OutOfRange {
                    field: "regionSubscriptionQuota",
                    ..
                } => "region_subscription_quota",
                _ => "max_seats_per_client",
            };
            return invalid(name, &e.to_string());
        }
        if self.group_commit_max_batch == 0 || self.group_commit_in_flight == 0 {
            return invalid(
                "group_commit_max_batch",
                "batch size and in-flight count must be at least 1",
            );
        }
        if self.graphql_max_depth < 3 || self.graphql_max_complexity < 10 {
            return invalid("graphql_max_depth", "limits this low refuse every useful query");
        }
        self.ivs_rate_overrides()?;
        if let Err(why) = crate::net::Cidr::parse_list(&self.trusted_proxy_cidrs) {
            return invalid("trusted_proxy_cidrs", &why);
        }
        if !self.client_ip_header.trim().is_empty()
            && axum::http::HeaderName::try_from(self.client_ip_header.trim()).is_err()
        {
            return invalid("client_ip_header", "is not a header name");
        }
        if self.trusted_proxies == 0 {
            return invalid(
                "trusted_proxies",
                "must be at least 1 (the proxy that writes client_ip_header)",
            );
        }
        if self.max_connections == 0 || self.max_websockets == 0 {
            return invalid("max_connections", "connection caps must be at least 1");
        }
        if self.graphql_max_nesting < 8 || self.graphql_max_tokens < 100 {
            return invalid("graphql_max_nesting", "limits this low refuse every useful query");
        }
        Ok(())
    }
}

/// `sdk_url` is empty, an `https://` URL, plain `http://` on loopback, or a path on this node.
fn check_sdk_url(url: &str) -> Result<(), &'static str> {
    let ok_chars = url
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | ';' | ',' | '<' | '>'));
    let loopback = url
        .strip_prefix("http://")
        .is_some_and(|r| r.starts_with("127.") || r.starts_with("localhost") || r.starts_with("[::1]"));
    let path = url.starts_with('/') && !url.starts_with("//");
    if url.is_empty() || (ok_chars && (url.starts_with("https://") && url.len() > 8 || loopback || path)) {
        Ok(())
    } else {
        Err(
            "must be an https:// URL, http:// on loopback, or a path on this node such as /sdk/amazon-ivs-web-broadcast.js",
        )
    }
}
