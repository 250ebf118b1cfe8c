//! `maxResults` / `nextToken` pagination over key-ordered records. A token is the hex of the
//! last key returned, so it survives restarts and needs no server-side state.

use berth_api::EcsError;

pub(crate) fn max_results(value: Option<i32>, max: i32) -> Result<usize, EcsError> {
    match value {
        None => Ok(max as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(EcsError::invalid(format!(
            "maxResults {n} must be between 1 and {max}"
        ))),
    }
}

pub(crate) fn token_for(key: &str) -> String {
    hex::encode(key)
}

pub(crate) fn decode_token(token: Option<&str>) -> Result<Option<String>, EcsError> {
    token
        .map(|t| {
            hex::decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    EcsError::invalid(format!("nextToken '{t}' is not a token this server issued"))
                })
        })
        .transpose()
}

/// One page of `items` (already in order, each with its key) after `token`.
pub(crate) fn page<T>(
    items: Vec<(String, T)>,
    token: Option<&str>,
    limit: usize,
    descending: bool,
) -> (Vec<T>, Option<String>) {
    let after = token;
    let start = match after {
        Some(t) => items
            .iter()
            .position(|(k, _)| {
                if descending {
                    k.as_str() < t
                } else {
                    k.as_str() > t
                }
            })
            .unwrap_or(items.len()),
        None => 0,
    };
    let rest: Vec<(String, T)> = items.into_iter().skip(start).collect();
    let more = rest.len() > limit;
    let mut out = Vec::with_capacity(limit.min(rest.len()));
    let mut last = None;
    for (k, v) in rest.into_iter().take(limit) {
        last = Some(k);
        out.push(v);
    }
    (
        out,
        if more {
            last.map(|k| token_for(&k))
        } else {
            None
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through_in_order() {
        let items: Vec<(String, i32)> = (0..5).map(|i| (format!("k{i}"), i)).collect();
        let (p1, t1) = page(items.clone(), None, 2, false);
        assert_eq!(p1, [0, 1]);
        let t1 = decode_token(t1.as_deref()).unwrap();
        let (p2, t2) = page(items.clone(), t1.as_deref(), 2, false);
        assert_eq!(p2, [2, 3]);
        let t2 = decode_token(t2.as_deref()).unwrap();
        let (p3, t3) = page(items.clone(), t2.as_deref(), 2, false);
        assert_eq!((p3, t3), (vec![4], None));
        let rev: Vec<(String, i32)> = items.into_iter().rev().collect();
        let (d1, dt) = page(rev.clone(), None, 3, true);
        assert_eq!(d1, [4, 3, 2]);
        let dt = decode_token(dt.as_deref()).unwrap();
        assert_eq!(page(rev, dt.as_deref(), 3, true).0, [1, 0]);
        assert!(decode_token(Some("zz")).is_err());
    }
}
