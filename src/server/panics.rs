//! A panic while serving one request answers that request 500 and leaves the process serving.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use poem_openapi::types::ToJSON;

use super::problem::Problem;

pub struct CatchPanics;

impl<E: Endpoint> Middleware<E> for CatchPanics {
    type Output = CatchPanicsEndpoint<E>;
    fn transform(&self, ep: E) -> Self::Output {
        CatchPanicsEndpoint(ep)
    }
}

pub struct CatchPanicsEndpoint<E>(E);

impl<E: Endpoint> Endpoint for CatchPanicsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        match AssertUnwindSafe(self.0.call(req)).catch_unwind().await {
            Ok(result) => result.map(IntoResponse::into_response),
            Err(panic) => {
                tracing::error!(
                    method = %method,
                    path = uri.path(),
                    panic = panic_message(panic.as_ref()),
                    "request handler panicked; answered 500"
                );
                let body = Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").to_json_string();
                Ok(Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .content_type("application/json; charset=utf-8")
                    .body(body))
            }
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(not a string)"
    }
}
