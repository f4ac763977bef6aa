//! The peer of the hit-path benchmark (bench/http.sh): the smallest axum server that answers
//! a fixed body, on the same runtime settings as the node. Usage: hello <addr> <body file>.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let body: &'static [u8] = match args.next() {
        Some(path) => std::fs::read(path).expect("body file").leak(),
        None => b"hello",
    };
    let app =
        Router::new().fallback(get(move || async move { ([("content-type", "text/html; charset=utf-8")], body) }));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
