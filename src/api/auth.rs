//! Who is asking: the API key presented (HTTP `Authorization: Bearer`, or `token` in the
//! WebSocket `connection_init` payload) resolved to a role, plus the client address for per-client
//! join limits. A wrong key is always an error; no key means anonymous.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ErrorCode;
use crate::config::ViewerJoin;
use crate::fleet::Role;
use crate::node::Node;

#[derive(Clone, Debug)]
pub struct Principal {
    pub role: Option<Role>,
    pub key_id: Option<String>,
    pub client: IpAddr,
}

impl Principal {
    /// Resolve the presented key (if any) against the replicated key set.
    pub fn resolve(node: &Node, presented: Option<&str>, client: IpAddr) -> Result<Self, async_graphql::Error> {
        let Some(key) = presented.map(str::trim).filter(|k| !k.is_empty()) else {
            return Ok(Self {
                role: None,
                key_id: None,
                client,
            });
        };
        let fleet = &node.store.view().fleet;
        let record = crate::node::keys::authenticate(fleet, key)
            .ok_or_else(|| ErrorCode::Unauthenticated.error("the API key is not valid"))?;
        Ok(Self {
            role: Some(record.role),
            key_id: Some(record.id.clone()),
            client,
        })
    }

    /// The client network a join by this principal counts against for the per-client seat cap:
    /// anonymous and viewer-key joins. Host and admin keys — integrators' back ends seating many
    /// users from one network — are not counted, as they are not limited per client either.
    pub fn seat_client(&self) -> Option<IpAddr> {
        match self.role {
            None | Some(Role::Viewer) => Some(self.client),
            Some(Role::Host | Role::Admin) => None,
        }
    }

    /// Admin may do anything; host may do host and viewer things; viewer only viewer things.
    pub fn require(&self, need: Role) -> Result<(), async_graphql::Error> {
        match self.role {
            None => Err(ErrorCode::Unauthenticated.error(format!("this needs an API key with the {need:?} role"))),
            Some(have) if have <= need => Ok(()),
            Some(have) => Err(ErrorCode::Forbidden.error(format!("a {have:?} key may not do this; it needs {need:?}"))),
        }
    }
}

/// `Bearer <key>` from an Authorization header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    header?
        .strip_prefix("Bearer ")
        .or_else(|| header?.strip_prefix("bearer "))
}

/// Per-client join limits. Anonymous joins and viewer keys are limited per client network
/// (`client_ip::ClientIdentity::subnet`); a viewer key also has a limit of its own, so a key
/// shipped in a public page cannot be used to skip the per-client one. Host and admin keys —
/// integrators' back ends joining on behalf of many users — are limited per key only.
pub struct JoinLimits {
    mode: ViewerJoin,
    per_client: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_key: Option<DefaultKeyedRateLimiter<String>>,
    per_viewer_key: Option<DefaultKeyedRateLimiter<String>>,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_second: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).expect("non-zero");
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

impl JoinLimits {
    pub fn new(mode: ViewerJoin, per_client: u32, per_key: u32, per_viewer_key: u32) -> Self {
        Self {
            mode,
            per_client: limiter(per_client),
            per_key: limiter(per_key),
            per_viewer_key: limiter(per_viewer_key),
        }
    }

    /// May this principal join now? `principal.client` is already the client's network.
    pub fn check(&self, who: &Principal) -> Result<(), async_graphql::Error> {
        if self.mode == ViewerJoin::Keyed {
            who.require(Role::Viewer)?;
        }
        let over = |l: &Option<DefaultKeyedRateLimiter<String>>, id: &String| {
            l.as_ref().is_some_and(|l| l.check_key(id).is_err())
        };
        let client_over = || {
            self.per_client
                .as_ref()
                .is_some_and(|l| l.check_key(&who.client).is_err())
        };
        let limited = match (&who.key_id, who.role) {
            (Some(id), Some(Role::Viewer)) => over(&self.per_viewer_key, id) || client_over(),
            (Some(id), _) => over(&self.per_key, id),
            (None, _) => client_over(),
        };
        if limited {
            return Err(ErrorCode::RateLimited.error("too many joins from this client; retry in a moment"));
        }
        Ok(())
    }

    /// Forget idle clients (called periodically so the maps stay bounded).
    pub fn prune(&self) {
        if let Some(l) = &self.per_client {
            l.retain_recent();
        }
        for l in [&self.per_key, &self.per_viewer_key].into_iter().flatten() {
            l.retain_recent();
        }
    }
}
