//! Bad input answers a 4xx with a JSON `{"detail": ...}` body, like FastAPI:
//! 404 for an unknown path, 405 with `Allow` for a known path with another
//! method, 413 for a body over the limit, 415 for a body that is not JSON, 422
//! for input that does not parse.

mod support;

use std::io::{BufReader, Write};

use afterward::testing::{TestResponse, TestServer};
use afterward::{App, HttpError, Json, Method, Path, Query, RawBody, Server};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Limit {
    limit: u32,
}

fn app() -> App {
    App::new()
        .get("/items/{id}", |Path(id): Path<u32>| Json(json!({"id": id})))
        .delete("/items/{id}", |Path(id): Path<u32>| {
            Err::<(), _>(HttpError::new(403, format!("item {id} is read-only")))
        })
        .post("/items", |Json(item): Json<Value>| (201, Json(item)))
        .get("/search", |Query(Limit { limit }): Query<Limit>| {
            limit.to_string()
        })
        .put("/raw", |RawBody(body): RawBody| body.len().to_string())
}

fn server() -> TestServer {
    TestServer::with_builder(Server::builder().max_body_bytes(16), app())
}

fn detail(response: &afterward::testing::TestResponse) -> String {
    assert_eq!(response.header("Content-Type"), Some("application/json"));
    response.json()["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {}", response.text()))
        .to_owned()
}

#[test]
fn unknown_paths_answer_404() {
    let server = server();
    for path in ["/", "/nope", "/item", "/items/1/more", "/items/"] {
        let response = server.get(path).send();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(detail(&response), "Not Found");
    }
}

#[test]
fn a_known_path_with_another_method_answers_405_with_allow() {
    let server = server();
    let response = server.put("/items/1").send();
    assert_eq!(response.status(), 405);
    assert_eq!(detail(&response), "Method Not Allowed");
    assert_eq!(response.header("Allow"), Some("GET, DELETE, HEAD"));
    assert_eq!(server.get("/items").send().status(), 405);
}

#[test]
fn head_is_answered_by_the_get_route_without_a_body() {
    let server = server();
    let response = server.head("/items/7").send();
    assert_eq!(response.status(), 200);
    assert!(response.body().is_empty());
    assert_eq!(server.get("/items/7").send().json(), json!({"id": 7}));
}

#[test]
fn input_that_does_not_parse_answers_422() {
    let server = server();
    let cases = [
        (server.get("/items/abc"), "invalid path parameter"),
        (server.get("/search"), "missing field `limit`"),
        (server.get("/search?limit=-1"), "`limit`"),
        (
            server.post("/items").json(&json!(null)).body("{not json"),
            "invalid JSON body",
        ),
    ];
    for (request, expected) in cases {
        let response = request.send();
        assert_eq!(response.status(), 422);
        let detail = detail(&response);
        assert!(
            detail.contains(expected),
            "{detail:?} should mention {expected:?}"
        );
    }
}

#[test]
fn a_body_that_is_not_json_answers_415() {
    let server = server();
    let response = server.post("/items").body("{}").send();
    assert_eq!(response.status(), 415);
    assert!(detail(&response).contains("application/json"));
}

#[test]
fn a_body_over_the_limit_answers_413() {
    let server = server();
    let at_limit = server.put("/raw").body(vec![b'x'; 16]).send();
    assert_eq!(at_limit.text(), "16");

    let response = server.put("/raw").body(vec![b'x'; 17]).send();
    assert_eq!(response.status(), 413);
    assert!(detail(&response).contains("16 bytes"));

    let json = server
        .post("/items")
        .json(&json!({"long": "0123456789"}))
        .send();
    assert_eq!(json.status(), 413);
}

#[test]
fn a_chunked_body_over_the_limit_answers_413() {
    let server = server();
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(afterward::testing::TEST_TIMEOUT))
        .unwrap();
    let chunk = "x".repeat(10);
    write!(
        stream,
        "PUT /raw HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         a\r\n{chunk}\r\na\r\n{chunk}\r\n0\r\n\r\n"
    )
    .unwrap();
    let response = TestResponse::read_from(&mut BufReader::new(stream), false).unwrap();
    assert_eq!(response.status(), 413);
    assert!(detail(&response).contains("16 bytes"));
}

#[test]
fn a_handler_error_keeps_its_status_and_detail() {
    let server = server();
    let response = server.delete("/items/3").send();
    assert_eq!(response.status(), 403);
    assert_eq!(detail(&response), "item 3 is read-only");
}

#[test]
fn every_response_carries_a_request_id() {
    let server = server();
    let given = server
        .get("/items/1")
        .header("X-Request-Id", "trace-42")
        .send();
    assert_eq!(given.header("X-Request-Id"), Some("trace-42"));
    let made = server.get("/nope").send();
    let id = made.header("X-Request-Id").expect("a generated id");
    assert!(!id.is_empty() && id != "trace-42");
}

#[test]
fn an_unknown_method_is_501_and_a_known_one_elsewhere_405() {
    let app = App::new()
        .get("/", || "ok")
        .route(Method::Other("BREW".into()), "/pot", || "coffee");
    let server = TestServer::new(app);
    assert_eq!(server.request("BREW", "/").send().status(), 405);
    assert_eq!(server.request("BREW", "/pot").send().text(), "coffee");
    assert_eq!(server.request("DELETE", "/").send().status(), 405);
    let server = TestServer::new(App::new().get("/", || "ok"));
    let response = server.request("BREW", "/").send();
    assert_eq!(response.status(), 501);
    assert_eq!(detail(&response), "Not Implemented");
}
