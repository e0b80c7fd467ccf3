//! Field rules from the IVS Real-Time API model (lengths, patterns, ranges; `ivs-realtime.md` §1.3)
//! and the one paging scheme every List operation shares. The SDK validates nothing client-side, so
//! the emulator must.

use std::collections::BTreeMap;

use crate::ivs::emulator::error::{ApiError, ApiResult};

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::Validation(msg.into())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Stage and public-key names: 0..128 of `[a-zA-Z0-9-_]`.
pub fn name(what: &str, value: &str) -> ApiResult<()> {
    if value.len() > 128 || !value.chars().all(is_name_char) {
        return Err(invalid(format!(
            "{what} must be at most 128 characters of [a-zA-Z0-9-_]: {value:?}"
        )));
    }
    Ok(())
}

/// `arn:aws:ivs:<region>:<account>:<kind>/<id>`, ≤128 characters.
pub fn arn(kind: &str, value: &str) -> ApiResult<()> {
    let bad = || invalid(format!("not a valid {kind} ARN: {value:?}"));
    let rest = value.strip_prefix("arn:aws:ivs:").ok_or_else(bad)?;
    let (region, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (account, resource) = rest.split_once(':').ok_or_else(bad)?;
    let (k, id) = resource.split_once('/').ok_or_else(bad)?;
    let ok = value.len() <= 128
        && !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !account.is_empty()
        && account.chars().all(|c| c.is_ascii_digit())
        && k == kind
        && !id.is_empty()
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok { Ok(()) } else { Err(bad()) }
}

/// At most 50 tags; keys 1..128, values 0..256 characters.
pub fn tags(tags: &BTreeMap<String, String>) -> ApiResult<()> {
    if tags.len() > 50 {
        return Err(invalid(format!("at most 50 tags are allowed, got {}", tags.len())));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
            return Err(invalid(format!(
                "tag {k:?} must have a 1..128 character key and a 0..256 character value"
            )));
        }
    }
    Ok(())
}

/// Token/replication attributes: 1 KB in total, keys plus values.
pub fn attributes(attrs: &BTreeMap<String, String>) -> ApiResult<()> {
    let total: usize = attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > 1024 {
        return Err(invalid(format!(
            "attributes are {total} bytes; the maximum is 1 KB in total"
        )));
    }
    Ok(())
}

pub fn user_id(value: &str) -> ApiResult<()> {
    if value.chars().count() > 128 {
        return Err(invalid("userId must be at most 128 characters"));
    }
    Ok(())
}

/// `maxResults` within `1..=max`, defaulting to 50.
pub fn max_results(value: Option<i64>, max: i64) -> ApiResult<usize> {
    match value {
        None => Ok(50.min(max) as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(format!("maxResults must be between 1 and {max}, got {n}"))),
    }
}

/// One page of `items` (sorted by their key) after `next_token`, and the token for the next page.
/// The token is the last returned key, so deleting items between pages skips nothing.
pub fn page<T>(items: Vec<(String, T)>, next_token: Option<&str>, max: usize) -> ApiResult<(Vec<T>, Option<String>)> {
    let after = next_token.filter(|t| !t.is_empty());
    if let Some(t) = after
        && (t.len() > 1024 || !t.chars().all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c)))
    {
        return Err(invalid(format!("invalid nextToken {t:?}")));
    }
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
        .collect();
    let more = rest.len() > max;
    rest.truncate(max);
    let next = if more {
        rest.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    Ok((rest.into_iter().map(|(_, v)| v).collect(), next))
}

/// A sortable page key for the `i`-th item of a list that only grows.
pub fn index_key(i: usize) -> String {
    format!("{i:010}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns_follow_the_model_patterns() {
        assert!(name("name", "warm-pool_01").is_ok());
        assert!(name("name", "has space").is_err());
        assert!(name("name", &"x".repeat(129)).is_err());
        assert!(arn("stage", "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEfGhIjKl").is_ok());
        assert!(arn("stage", "arn:aws:ivs:us-east-1:123456789012:public-key/AbCd").is_err());
        assert!(arn("stage", "stage/AbCd").is_err());
    }

    #[test]
    fn paging_walks_every_item_once() {
        let items: Vec<(String, usize)> = (0..7).map(|i| (index_key(i), i)).collect();
        let (first, next) = page(items.clone(), None, 3).unwrap();
        assert_eq!(first, vec![0, 1, 2]);
        let (second, next) = page(items.clone(), next.as_deref(), 3).unwrap();
        assert_eq!(second, vec![3, 4, 5]);
        let (third, next) = page(items, next.as_deref(), 3).unwrap();
        assert_eq!((third, next), (vec![6], None));
        assert!(page(Vec::<(String, u8)>::new(), Some("bad token!"), 3).is_err());
    }

    #[test]
    fn attribute_size_is_counted_over_keys_and_values() {
        assert!(attributes(&BTreeMap::from([("k".into(), "v".repeat(1023))])).is_ok());
        assert!(attributes(&BTreeMap::from([("k".into(), "v".repeat(1024))])).is_err());
    }
}
