//! Page responses: the pipeline's result with `ETag` / `If-None-Match` (304), `Age`,
//! `X-Mizan-Cache`, `Cache-Control` and `Vary`. A streaming miss has the same headers but
//! `Content-Length` and `ETag` (neither is known before the body is complete): its body goes
//! out chunked as the render produces it, and a render that fails midway aborts it, so the
//! client sees an error, never a complete response.

use super::errors;
use crate::node::Node;
use crate::node::page::{CacheState, PageRequest};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use std::sync::Arc;

pub async fn serve(node: &Arc<Node>, request: Request) -> Response {
    let head = request.method() == Method::HEAD;
    let uri = request.uri();
    let headers = request.headers();
    let page_request = PageRequest { path: uri.path(), query: uri.query().unwrap_or(""), headers, stream: !head };
    let if_none_match = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    let served = match node.page(&page_request).await {
        Ok(served) => served,
        Err(error) => return errors::for_page(&error),
    };
    crate::metrics::request::note_cache(served.state);
    let page = &served.page;
    let etag = page.meta.etag.as_deref().unwrap_or("");
    // RFC 9110 §15.4.5: 304 stands for a 200, never for a cached 404.
    let not_modified = served.state != CacheState::Bypass
        && (200..300).contains(&page.meta.status)
        && !etag.is_empty()
        && if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let body = match &served.live {
        _ if head || not_modified => Body::empty(),
        Some(live) => Body::from_stream(live.reader()),
        None => Body::from(page.body.clone()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::from_u16(page.meta.status).unwrap_or(StatusCode::OK)
    };
    let h = response.headers_mut();
    if !not_modified {
        for (name, value) in &page.meta.headers {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
                h.append(n, v);
            }
        }
    }
    h.insert(HeaderName::from_static("x-mizan-cache"), HeaderValue::from_static(served.state.as_str()));
    if served.state == CacheState::Bypass {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    } else {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=0, must-revalidate"));
        // None yet on a streaming miss: the body it hashes is not complete.
        if !etag.is_empty()
            && let Ok(etag) = HeaderValue::try_from(etag)
        {
            h.insert(header::ETAG, etag);
        }
        h.insert(
            header::AGE,
            if served.age_s == 0 { HeaderValue::from_static("0") } else { HeaderValue::from(served.age_s) },
        );
        if !served.vary.is_empty()
            && let Ok(v) = HeaderValue::try_from(served.vary.join(", "))
        {
            h.insert(header::VARY, v);
        }
    }
    response
}
