//! Optional static hosting of the built app, and the security headers on every response.

use std::path::Path;

use axum::http::{HeaderName, HeaderValue};
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
pub type SecurityHeaders = Stack<H, Stack<H, Stack<H, Stack<H, Stack<H, Stack<H, H>>>>>>;

/// CSP, nosniff, no referrer, no framing, and cross-origin isolation (COOP `same-origin` +
/// COEP `require-corp`, resources `same-origin`): the page may then share memory between its
/// workers (`SharedArrayBuffer`: the assistant splits one answer over two cores). The app loads
/// nothing from other origins, so isolation costs it nothing. One layer stack for every response.
pub fn security_headers() -> SecurityHeaders {
    let h = |name: &'static str, v: &'static str| {
        SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(v),
        )
    };
    Stack::new(
        h("content-security-policy", CSP),
        Stack::new(
            h("x-content-type-options", "nosniff"),
            Stack::new(
                h("referrer-policy", "no-referrer"),
                Stack::new(
                    h("x-frame-options", "DENY"),
                    Stack::new(
                        h("cross-origin-opener-policy", "same-origin"),
                        Stack::new(
                            h("cross-origin-embedder-policy", "require-corp"),
                            h("cross-origin-resource-policy", "same-origin"),
                        ),
                    ),
                ),
            ),
        ),
    )
}
