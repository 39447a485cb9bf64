//! Parameters of the API are single-valued: `?wait=1&wait=40` is a 400 naming `wait`, not a
//! silent choice of one of the two. The same holds for the write headers, which also must be
//! ASCII: poem-openapi reads a header it cannot decode as absent, which would turn a write with
//! an undecodable `If-Match` into an unconditional one.

use poem::http::Method;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

use super::problem::ApiError;

/// Every query parameter the API declares.
pub const SINGLE_VALUED: [&str; 4] = ["wait", "prefix", "limit", "cursor"];
/// The headers that shape a write.
pub const WRITE_HEADERS: [&str; 3] = ["If-Match", "If-None-Match", "Idempotency-Key"];

pub struct SingleValuedQuery;

impl<E: Endpoint> Middleware<E> for SingleValuedQuery {
    type Output = SingleValuedQueryEndpoint<E>;
    fn transform(&self, ep: E) -> Self::Output {
        SingleValuedQueryEndpoint(ep)
    }
}

pub struct SingleValuedQueryEndpoint<E>(E);

impl<E: Endpoint> Endpoint for SingleValuedQueryEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        if let Some(name) = req.uri().query().and_then(repeated_parameter) {
            return Err(ApiError::bad_request(format!("{name}: given more than once; pass it once")).into());
        }
        if matches!(*req.method(), Method::PUT | Method::DELETE) {
            for name in WRITE_HEADERS {
                let mut values = req.headers().get_all(name).iter();
                if let Some(value) = values.next() {
                    if values.next().is_some() {
                        return Err(ApiError::bad_request(format!("{name}: given more than once; send it once")).into());
                    }
                    if value.to_str().is_err() {
                        return Err(ApiError::bad_request(format!("{name}: must be printable ASCII")).into());
                    }
                }
            }
        }
        self.0.call(req).await.map(IntoResponse::into_response)
    }
}

/// The first declared parameter that the query string names more than once.
pub fn repeated_parameter(query: &str) -> Option<&'static str> {
    let mut seen = [false; SINGLE_VALUED.len()];
    for pair in query.split('&') {
        let raw_name = pair.split_once('=').map_or(pair, |(n, _)| n);
        let name = decode_component(raw_name);
        if let Some(i) = SINGLE_VALUED.iter().position(|p| p.as_bytes() == name.as_slice()) {
            if std::mem::replace(&mut seen[i], true) {
                return Some(SINGLE_VALUED[i]);
            }
        }
    }
    None
}

/// `application/x-www-form-urlencoded` decoding of one name: `+` is a space, `%XX` a byte.
fn decode_component(raw: &str) -> Vec<u8> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_repeats() {
        assert_eq!(repeated_parameter("wait=1&wait=40"), Some("wait"));
        assert_eq!(repeated_parameter("limit=1&prefix=a&limit"), Some("limit"));
        assert_eq!(repeated_parameter("w%61it=1&wait=2"), Some("wait"));
        assert_eq!(repeated_parameter("cursor=&cursor=ab"), Some("cursor"));
        assert_eq!(repeated_parameter("wait=1&limit=2&prefix=x&cursor=y&other=1&other=2"), None);
        assert_eq!(repeated_parameter(""), None);
        assert_eq!(repeated_parameter("%"), None);
        assert_eq!(repeated_parameter("wait%=1&wait%=2"), None);
    }

    proptest! {
        #[test]
        fn never_panics_and_finds_every_repeat(q in "[a-z%0-9+=&]{0,40}|\\PC*", name in prop::sample::select(SINGLE_VALUED.to_vec())) {
            let _ = repeated_parameter(&q);
            let twice = format!("{q}&{name}=1&{name}=2");
            prop_assert!(repeated_parameter(&twice).is_some());
        }
    }
}
