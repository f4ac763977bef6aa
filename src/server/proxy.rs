//! Forwarding a proxied request to the origin and its answer back, purging what the
//! origin's `X-Mizan-Invalidate` names before the client sees the answer.

use super::errors;
use crate::cache::invalidate;
use crate::metrics::request as per_request;
use crate::node::Node;
use crate::origin::proxy::end_to_end;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::TryStreamExt as _;
use std::net::SocketAddr;

/// Forwards `request` to the origin under `path`, the normalised path the prefix check
/// approved ([`crate::origin::proxy::decide`]), never the raw one.
pub async fn forward(node: &Node, client: SocketAddr, path: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let base = node.origin.config().base.trim_end_matches('/');
    let url = match parts.uri.query() {
        Some(query) => format!("{base}{path}?{query}"),
        None => format!("{base}{path}"),
    };
    // HTTP/2 has no Host header: the authority is in the request target.
    let host = parts
        .headers
        .get("host")
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| axum::http::HeaderValue::from_str(a.as_str()).ok()));
    // The origin's own header is honoured on responses only; never pass one along. The
    // request id the origin gets is the node's (the visitor's only when well-formed).
    let mut headers = end_to_end(&parts.headers, &["host", "x-mizan-invalidate", "x-request-id"]);
    node.forwarding.apply(&mut headers, client.ip(), host.as_ref());
    per_request::note_route(per_request::Label::Fixed("proxy"));
    if let Some(id) = per_request::current() {
        headers.insert(super::observe::X_REQUEST_ID, id.header_value());
    }
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let answer =
        node.origin.proxy_client().request(parts.method.clone(), &url).headers(headers).body(body).send().await;
    let answer = match answer {
        Ok(answer) => answer,
        // The path only: the origin's URL may hold credentials, the query a visitor's data.
        Err(e) if e.is_timeout() => {
            tracing::error!(%path, "proxy: origin timed out");
            return errors::page(StatusCode::GATEWAY_TIMEOUT, "The origin did not answer in time.");
        }
        Err(e) => {
            tracing::error!(%path, error = %e.without_url(), "proxy: origin unreachable");
            return errors::page(StatusCode::BAD_GATEWAY, "The origin could not be reached.");
        }
    };
    let invalidations: Vec<String> = answer
        .headers()
        .get_all("x-mizan-invalidate")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    if !invalidations.is_empty() {
        let (purges, skipped) = invalidate::parse(&invalidations.join(", "));
        for why in skipped {
            tracing::warn!(%path, member = %why, "X-Mizan-Invalidate: member skipped");
        }
        for purge in purges {
            node.purge_from_origin(purge).await;
        }
    }
    let mut response = Response::builder().status(answer.status());
    if let Some(h) = response.headers_mut() {
        *h = end_to_end(answer.headers(), &[]);
    }
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| errors::page(StatusCode::BAD_GATEWAY, "The origin's answer could not be relayed."))
}
