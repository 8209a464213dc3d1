//! Entry points for the `cargo fuzz` targets in `fuzz/` (built only with
//! `--cfg fuzzing`): the engine's request-head parser and the router with its
//! extractors, driven by arbitrary bytes.

use std::sync::Arc;

use std::collections::HashMap;

use crate::{App, BackgroundTasks, HttpError, Json, Method, Path, Query, Request};

/// Parses a request head and reads its body (the engine's parser and
/// framing checks).
pub fn request_head(bytes: &[u8]) {
    crate::engine::fuzz_request(bytes);
}

type Search = HashMap<String, String>;
type Numbers = HashMap<String, u32>;

fn app() -> App {
    App::new()
        .get(
            "/items/{id}",
            |Path(id): Path<u32>, Query(_): Query<Search>| id.to_string(),
        )
        .get(
            "/users/{user}/items/{id}",
            |Path((u, i)): Path<(String, u64)>| format!("{u}{i}"),
        )
        .post("/items", |Json(_): Json<(String, f64, Vec<String>)>| {
            "created"
        })
        .post("/any", |Json(_): Json<serde_json::Value>| "ok")
}

/// Routes `target` (path and query, percent-decoded) with `body` as a JSON
/// body, through the real router and extractors.
pub fn handle(method: &str, target: &str, body: &[u8]) {
    thread_local! {
        static APP: App = app();
    }
    let counters = crate::stats::Counters::new(1);
    let mut headers = crate::headers::Headers::new();
    headers.insert("Content-Type", "application/json");
    APP.with(|app| {
        let mut request = Request::new(crate::request::RequestInit {
            method: Method::from_token(method),
            target,
            headers,
            remote_addr: None,
            request_id: Arc::from("fuzz"),
            body: crate::engine::BodySource::Bytes(body.to_vec()),
            declared_length: Some(body.len() as u64),
            body_limit: 64 * 1024,
            tasks: BackgroundTasks::new(
                Arc::from("fuzz"),
                Arc::new(crate::stats::Counters::new(1)),
            ),
            state: app.state_map(),
            counters: &counters,
        });
        let _ = app.handle(&mut request, &|_| None);
        let _: Result<Query<Search>, HttpError> = request.extract();
        let _: Result<Query<Numbers>, HttpError> = request.extract();
        let _: Result<Query<(String, bool)>, HttpError> = request.extract();
    });
}

#[cfg(test)]
mod tests {
    /// Each fuzz entry point on a few inputs: compiled and run in every test
    /// run, not only under `cargo fuzz`.
    #[test]
    fn the_fuzz_entry_points_take_any_input() {
        super::request_head(b"\x05POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok");
        super::handle("POST", "/items", br#"["a", 1.5, ["b"]]"#);
        super::handle("GET", "/search?q=%ZZ&n=-1", b"\xff");
    }
}
