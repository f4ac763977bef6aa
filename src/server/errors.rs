//! Error pages: a status chosen from the error, a short page that says what happened in
//! words a visitor can use, and the full detail in the log.

use crate::manifest::RouteError;
use crate::node::page::PageError;
use crate::origin::OriginError;
use crate::pool::RenderError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An HTML error page.
pub fn page(status: StatusCode, detail: &str) -> Response {
    let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{d}</p></body></html>",
        t = escape(&title),
        d = escape(detail)
    );
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// 503 with `Retry-After: 1`: the node has no room for the page now (render queue, origin
/// slots).
fn busy(error: &PageError) -> Response {
    let mut r = page(StatusCode::SERVICE_UNAVAILABLE, "The server is busy; try again in a moment.");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    tracing::warn!(error = %error, "page refused");
    r
}

/// The response for a failed page, logged with its full cause.
pub fn for_page(error: &PageError) -> Response {
    let (status, detail) = match error {
        PageError::Route(RouteError::NotFound(_)) => {
            (StatusCode::NOT_FOUND, "There is no page at this address.".to_string())
        }
        PageError::Route(RouteError::BadUrl(why)) if why.starts_with("longer") => {
            (StatusCode::URI_TOO_LONG, "The address is too long.".to_string())
        }
        PageError::Route(RouteError::BadUrl(why)) => {
            (StatusCode::BAD_REQUEST, format!("The address was refused: {why}."))
        }
        PageError::Origin(OriginError::Timeout { .. }) => {
            (StatusCode::GATEWAY_TIMEOUT, "The data for this page did not arrive in time.".to_string())
        }
        PageError::Origin(OriginError::Schema { context, schema_path, instance_path, .. }) => (
            StatusCode::BAD_GATEWAY,
            format!("The data for \"{context}\" does not match its schema (at {instance_path}, rule {schema_path})."),
        ),
        PageError::Origin(OriginError::TooLarge { context, .. }) => {
            (StatusCode::BAD_GATEWAY, format!("The data for \"{context}\" is larger than this node accepts."))
        }
        PageError::Origin(OriginError::Busy { .. }) => return busy(error),
        PageError::Origin(_) => (StatusCode::BAD_GATEWAY, "The data for this page could not be fetched.".to_string()),
        PageError::Render(e) if e.is_overload() => return busy(error),
        PageError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "The page failed to render.".to_string()),
        PageError::Quarantined { retry_after_s, .. } => {
            let mut r = page(StatusCode::SERVICE_UNAVAILABLE, "This page is failing; try again later.");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            tracing::debug!(error = %error, "page refused");
            return r;
        }
        PageError::Render(RenderError::CpuBudget { .. }) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "The page needed more computing time than allowed.".to_string())
        }
        PageError::Render(RenderError::HeapLimit { .. }) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "The page needed more memory than allowed.".to_string())
        }
        PageError::Render(RenderError::Timeout { .. }) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "The page took too long to render.".to_string())
        }
        PageError::Render(_) => (StatusCode::INTERNAL_SERVER_ERROR, "The page failed to render.".to_string()),
    };
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), error = %error, "page failed");
    } else {
        tracing::debug!(status = status.as_u16(), error = %error, "page not served");
    }
    page(status, &detail)
}
