//! Optional static hosting of the built app, and the security headers on every response.

use std::path::Path;

use axum::http::{HeaderName, HeaderValue, header};
use tower::layer::util::Stack;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// The Content Security Policy: nothing from third parties, wasm allowed, WebSockets to relays.
/// Inline styles are allowed: the Leptos UI sets `style` attributes (progress bars); scripts
/// stay strictly same-origin files.
pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
connect-src 'self' ws: wss:; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; font-src 'self'; \
worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Serve `root` (index.html for directories; MIME types from the extension, `.wasm` included).
pub fn static_files(root: &Path) -> ServeDir {
    ServeDir::new(root)
        .append_index_html_on_directories(true)
        .precompressed_gzip()
}

type H = SetResponseHeaderLayer<HeaderValue>;
/// The layer type of [`security_headers`].
pub type SecurityHeaders = Stack<H, Stack<H, Stack<H, H>>>;

/// CSP, nosniff, no referrer, no framing: one layer stack applied to every response.
pub fn security_headers() -> SecurityHeaders {
    let h = |name: HeaderName, v: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(v))
    };
    Stack::new(
        h(header::CONTENT_SECURITY_POLICY, CSP),
        Stack::new(
            h(header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            Stack::new(
                h(header::REFERRER_POLICY, "no-referrer"),
                h(header::X_FRAME_OPTIONS, "DENY"),
            ),
        ),
    )
}
