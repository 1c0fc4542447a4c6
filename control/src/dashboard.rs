//! The dashboard at `GET /` on the admin address (SPEC §10): one self-contained HTML page.
//!
//! The page is compiled into the binary: its pieces under `dashboard/` (markup, CSS, the chart
//! code, the wave-2 panels, the buttons, the page's loop) are concatenated at compile time
//! into one document with inline CSS and vanilla JS, inline SVG charts, no external assets and
//! no build step. It reads the same JSON API as every other client, once a second, and sends
//! mutations with a bearer token the user types when the admin asks for one (kept in the
//! page's memory only). The headers below keep it that way: a content security policy that
//! allows nothing from elsewhere, and no framing (its buttons change live traffic).

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;

use crate::admin::AdminResponse;

/// The page itself.
pub const PAGE: &str = concat!(
    include_str!("dashboard/head.html"),
    include_str!("dashboard/style.css"),
    include_str!("dashboard/body.html"),
    include_str!("dashboard/charts.js"),
    include_str!("dashboard/panels.js"),
    include_str!("dashboard/actions.js"),
    include_str!("dashboard/app.js"),
    include_str!("dashboard/tail.html"),
);

/// Inline script and style only; fetches only to this origin.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `GET /`.
pub fn page() -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "src=", "<link", "@import"] {
            let hits: Vec<&str> = PAGE
                .lines()
                .filter(|l| l.contains(needle))
                // The SVG namespace is an identifier, not a fetch.
                .filter(|l| !l.contains("http://www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "{needle:?} in the dashboard: {hits:?}");
        }
    }

    #[test]
    fn the_page_is_html_with_the_right_headers() {
        let response = page();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        assert!(PAGE.starts_with("<!doctype html>"));
    }

    #[test]
    fn the_pieces_make_one_document() {
        for (needle, count) in [
            ("<style>", 1),
            ("</style>", 1),
            ("<script>", 1),
            ("</script>", 1),
        ] {
            assert_eq!(PAGE.matches(needle).count(), count, "{needle}");
        }
        assert!(PAGE.trim_end().ends_with("</html>"));
        // Script pieces inside the one <script>, the style inside the one <style>.
        let script = &PAGE[PAGE.find("<script>").unwrap()..];
        assert!(script.contains("function chart(") && script.contains("async function refresh()"));
        let style = &PAGE[PAGE.find("<style>").unwrap()..PAGE.find("</style>").unwrap()];
        assert!(style.contains(".chart .ceiling"));
    }
}
