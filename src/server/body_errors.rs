//! Better 400s for write bodies, and an early 413 for oversized ones.
//!
//! poem-openapi's own parse errors do not always name the field at fault ("found null while
//! parsing PutBody"). This middleware keeps a cheap reference to the body and, only when the
//! request failed with a 400, explains what is wrong with it, field by field.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use poem::http::{header, Method, StatusCode};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response, Result};

use super::problem::ApiError;

pub struct BodyErrors {
    /// Largest body accepted at all; larger ones get 413 before they are parsed.
    pub max_body_bytes: usize,
}

impl<E: Endpoint> Middleware<E> for BodyErrors {
    type Output = BodyErrorsEndpoint<E>;
    fn transform(&self, ep: E) -> Self::Output {
        BodyErrorsEndpoint { inner: ep, max_body_bytes: self.max_body_bytes }
    }
}

pub struct BodyErrorsEndpoint<E> {
    inner: E,
    max_body_bytes: usize,
}

impl<E: Endpoint> Endpoint for BodyErrorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Response> {
        if req.method() != Method::PUT {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            return Err(ApiError::too_large(format!("body: more than {} bytes", self.max_body_bytes)).into());
        }
        let bytes = read_limited(req.take_body(), self.max_body_bytes).await?;
        if let Some(field) = duplicate_field(&bytes) {
            return Err(ApiError::bad_request(format!("{field}: given more than once in the body")).into());
        }
        req.set_body(Body::from(bytes.clone()));
        let result = self.inner.call(req).await.map(IntoResponse::into_response);
        let failed_400 = match &result {
            Ok(r) => r.status() == StatusCode::BAD_REQUEST,
            Err(e) => e.status() == StatusCode::BAD_REQUEST && !e.is_from_response(),
        };
        if failed_400 {
            if let Some(detail) = explain_put_body(&bytes) {
                return Err(ApiError::bad_request(detail).into());
            }
        }
        result
    }
}

/// Reads the body as it arrives and gives up with 413 as soon as it is longer than `limit`,
/// whatever its framing (a chunked body has no length to check up front).
async fn read_limited(body: Body, limit: usize) -> Result<Bytes> {
    let mut stream = std::pin::pin!(body.into_bytes_stream());
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| poem::Error::new(e, StatusCode::BAD_REQUEST))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::too_large(format!("body: more than {limit} bytes")).into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The first member name that occurs twice in a top-level JSON object (JSON parsers keep only
/// the last one, so such a body would be read differently by different clients).
pub fn duplicate_field(bytes: &[u8]) -> Option<String> {
    struct Members;
    impl<'de> serde::de::Visitor<'de> for Members {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut duplicate = None;
            while let Some(name) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                if duplicate.is_none() && !seen.insert(name.clone()) {
                    duplicate = Some(name);
                }
            }
            Ok(duplicate)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde::Deserializer::deserialize_map(&mut de, Members).ok().flatten()
}

/// Says what is wrong with a `PUT /v1/keys/{key}` body, or None if its shape is fine.
pub fn explain_put_body(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return Some(format!("body: invalid JSON ({e})")),
    };
    let Some(obj) = value.as_object() else {
        return Some("body: expected a JSON object such as {\"value\": \"...\"}".into());
    };
    if let Some(unknown) = obj.keys().find(|k| !matches!(k.as_str(), "value" | "ttl_seconds")) {
        return Some(format!("{unknown}: unknown field; expected `value` and optionally `ttl_seconds`"));
    }
    match obj.get("value") {
        None => return Some("value: required".into()),
        Some(v) if !v.is_string() => return Some("value: must be a string".into()),
        _ => {}
    }
    match obj.get("ttl_seconds") {
        None | Some(serde_json::Value::Null) => None,
        Some(t) if t.as_i64().is_some_and(|t| t >= 1) => None,
        Some(_) => Some("ttl_seconds: must be a whole number of seconds, at least 1".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_each_defect() {
        assert!(explain_put_body(b"{").unwrap().starts_with("body: invalid JSON"));
        assert!(explain_put_body(b"[]").unwrap().starts_with("body: expected"));
        assert!(explain_put_body(br#"{"valu":"x"}"#).unwrap().starts_with("valu:"));
        assert_eq!(explain_put_body(br#"{}"#).unwrap(), "value: required");
        assert_eq!(explain_put_body(br#"{"value":1}"#).unwrap(), "value: must be a string");
        assert!(explain_put_body(br#"{"value":"x","ttl_seconds":-1}"#).unwrap().starts_with("ttl_seconds:"));
        assert!(explain_put_body(br#"{"value":"x","ttl_seconds":1.5}"#).unwrap().starts_with("ttl_seconds:"));
        assert_eq!(explain_put_body(br#"{"value":"x","ttl_seconds":5}"#), None);
    }

    #[test]
    fn finds_duplicate_members() {
        assert_eq!(duplicate_field(br#"{"value":"a","value":"b"}"#).as_deref(), Some("value"));
        assert_eq!(
            duplicate_field(br#"{"value":"a","ttl_seconds":1,"ttl_seconds":2}"#).as_deref(),
            Some("ttl_seconds")
        );
        // Escapes name the same member.
        assert_eq!(duplicate_field(br#"{"value":"a","\u0076alue":"b"}"#).as_deref(), Some("value"));
        assert_eq!(duplicate_field(br#"{"value":"a","ttl_seconds":1}"#), None);
        assert_eq!(duplicate_field(br#"{"value":{"x":1,"x":2}}"#), None);
        assert_eq!(duplicate_field(b"[1,1]"), None);
        assert_eq!(duplicate_field(b"{"), None);
    }
}
