//! The broker's HTTP listener (`http.listeners`, default 127.0.0.1:9644): Prometheus
//! `/metrics`, `/health` (the process is up), `/ready` (storage recovered, Kafka listener
//! open), and the read-only web console at `/` with the JSON endpoints under `/api/` it
//! reads. Everything the page needs is compiled into the binary; it loads nothing else.
//!
//! The listener is opened before the data directory is recovered, so `/health` answers
//! during a long recovery and `/ready` says when it is over.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod api;
mod history;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use odradek_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

pub use history::History;

const CONSOLE_HTML: &str = include_str!("../assets/console.html");

/// What the server answers from: nothing until the broker has opened its storage and
/// bound its Kafka listener.
#[derive(Clone)]
pub struct Served {
    pub broker: Arc<Broker>,
    pub history: Arc<History>,
}

pub type ServedState = watch::Receiver<Option<Served>>;

/// Serves HTTP until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: ServedState, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let served = state.borrow().clone();
                async move { Ok::<_, Infallible>(route(request, served).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

// The builder fails only on an invalid header name or value: the names here are
// literals, and every content type is a `'static` literal of visible ASCII.
#[allow(clippy::expect_used)]
fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(body.into()))
        .expect("literal header names and values are valid")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body)
}

async fn route(request: Request<Incoming>, served: Option<Served>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    match (path.as_str(), served) {
        ("/health", _) => text(StatusCode::OK, "ok\n"),
        ("/ready", Some(_)) => text(StatusCode::OK, "ready\n"),
        ("/ready", None) => text(StatusCode::SERVICE_UNAVAILABLE, "recovering\n"),
        ("/", _) => respond(StatusCode::OK, "text/html; charset=utf-8", CONSOLE_HTML),
        (_, None) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is still starting\n",
        ),
        ("/metrics", Some(s)) => {
            let body = tokio::task::block_in_place(|| s.broker.metrics.render(&s.broker));
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        (p, Some(s)) if p.starts_with("/api/") => {
            let answer = tokio::task::block_in_place(|| api::answer(&s, &p[5..], &query));
            match answer {
                Ok(json) => respond(StatusCode::OK, "application/json", json),
                Err(api::ApiError::NotFound(what)) => respond(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    serde_json::json!({ "error": what }).to_string(),
                ),
                Err(api::ApiError::BadRequest(what)) => respond(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    serde_json::json!({ "error": what }).to_string(),
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
