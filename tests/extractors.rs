//! Handlers take extractors: path and query parameters (optional ones too),
//! headers, JSON and raw bodies, shared state; percent-decoding applies.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use afterward::testing::TestServer;
use afterward::{App, Headers, Json, Method, Path, Query, RawBody, State};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct ItemQuery {
    q: Option<String>,
    short: Option<bool>,
}

#[derive(Deserialize)]
struct UserItem {
    user: String,
    id: u64,
}

#[derive(Clone, Default)]
struct Hits(Arc<AtomicU64>);

fn app() -> App {
    App::new()
        .state(Hits::default())
        .get(
            "/items/{id}",
            |Path(id): Path<u32>, Query(query): Query<ItemQuery>| {
                Json(json!({"id": id, "q": query.q, "short": query.short}))
            },
        )
        .get(
            "/users/{user}/items/{id}",
            |Path(UserItem { user, id }): Path<UserItem>| format!("{user}:{id}"),
        )
        .get("/pair/{a}/{b}", |Path((a, b)): Path<(String, String)>| {
            format!("{a}|{b}")
        })
        .get("/agent", |headers: Headers, method: Method| {
            format!("{method} {}", headers.get("user-agent").unwrap_or("none"))
        })
        .post(
            "/echo",
            |Json(value): Json<Value>, RawBody(raw): RawBody| {
                Json(json!({"value": value, "bytes": raw.len()}))
            },
        )
        .post("/hit", |State(hits): State<Hits>| {
            (hits.0.fetch_add(1, Ordering::SeqCst) + 1).to_string()
        })
        .get("/missing-state", |State(_): State<String>| "unreachable")
        .get("/maybe", |query: Option<Query<UserItem>>| match query {
            Some(Query(item)) => item.user,
            None => "no query".to_owned(),
        })
}

#[test]
fn path_and_optional_query_parameters() {
    let server = TestServer::new(app());
    assert_eq!(
        server.get("/items/5").send().json(),
        json!({"id": 5, "q": null, "short": null})
    );
    assert_eq!(
        server.get("/items/5?q=some+thing&short=true").send().json(),
        json!({"id": 5, "q": "some thing", "short": true})
    );
}

#[test]
fn path_parameters_as_struct_and_tuple_are_percent_decoded() {
    let server = TestServer::new(app());
    assert_eq!(
        server.get("/users/ada%20l/items/9").send().text(),
        "ada l:9"
    );
    assert_eq!(
        server.get("/pair/caf%C3%A9/a%2Fb").send().text(),
        "café|a/b"
    );
}

#[test]
fn headers_method_json_and_raw_body() {
    let server = TestServer::new(app());
    let response = server.get("/agent").header("User-Agent", "tester/1").send();
    assert_eq!(response.text(), "GET tester/1");

    let body = json!({"a": [1, 2]});
    let response = server.post("/echo").json(&body).send();
    assert_eq!(
        response.json(),
        json!({"value": body, "bytes": body.to_string().len()})
    );
}

#[test]
fn state_is_shared_across_requests() {
    let server = TestServer::new(app());
    for expected in 1..=3 {
        assert_eq!(server.post("/hit").send().text(), expected.to_string());
    }
}

#[test]
fn missing_state_is_a_logged_500_not_a_panic() {
    // A real server sends nothing of the reason, which is only logged...
    let handle = afterward::Server::builder()
        .address("127.0.0.1:0")
        .build(app())
        .and_then(afterward::Server::spawn)
        .unwrap();
    let response =
        afterward::testing::TestRequest::new(handle.local_addr(), "GET", "/missing-state").send();
    assert_eq!(response.status(), 500);
    assert_eq!(response.json(), json!({"detail": "Internal Server Error"}));
    // ...while a test server shows it to the test.
    let server = TestServer::new(app());
    let response = server.get("/missing-state").send();
    assert_eq!(response.status(), 500);
    assert!(response.json()["reason"]
        .as_str()
        .unwrap()
        .contains("State<alloc::string::String>"));
}

#[test]
fn an_optional_extractor_is_none_only_when_absent() {
    let server = TestServer::new(app());
    assert_eq!(server.get("/maybe?user=ada&id=1").send().text(), "ada");
    assert_eq!(server.get("/maybe").send().text(), "no query");
    // Present but invalid: rejected as without `Option`, not silently `None`.
    let invalid = server.get("/maybe?user=ada").send();
    assert_eq!(invalid.status(), 422, "{}", invalid.text());
}

#[test]
fn an_optional_body_is_none_when_empty_and_rejected_when_bad() {
    let app = App::new().post("/json", |body: Option<Json<Value>>| match body {
        Some(Json(value)) => value.to_string(),
        None => "no body".to_owned(),
    });
    let builder = afterward::Server::builder().max_body_bytes(16);
    let server = TestServer::with_builder(builder, app);
    assert_eq!(server.post("/json").send().text(), "no body");
    assert_eq!(server.post("/json").json(&json!([1])).send().text(), "[1]");
    let statuses: Vec<u16> = [
        server.post("/json").body("[1]").send(), // not JSON: 415
        server
            .post("/json")
            .json(&json!({"long": "0123456789"}))
            .send(), // 413
        server
            .post("/json")
            .header("Content-Type", "application/json")
            .body("{")
            .send(), // 422
    ]
    .iter()
    .map(|r| r.status())
    .collect();
    assert_eq!(statuses, [415, 413, 422]);
}
