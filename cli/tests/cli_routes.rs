//! The `afterward` binary, black-box: every route of the demo app, request ids,
//! access log, and malformed input that must not kill the process.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cli::Afterward;
use support::{read, TEST_TIMEOUT};

#[test]
fn send_notification_writes_query_then_message() {
    // One request worker and one background worker: the two requests' tasks
    // reach the queue in the order the requests were sent, and cannot interleave.
    let mut server = Afterward::start(&["--workers", "1", "--background-workers", "1"]);
    let response = server.post("/send-notification/ada@example.com?q=hello");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json(), json!({"message": "Message sent"}));
    server.post("/send-notification/bob@example.com");

    assert!(server.stop().success());
    assert_eq!(
        read(&server.log_file()),
        "found query: hello\nmessage to ada@example.com\nmessage to bob@example.com\n"
    );
}

/// Polls `GET /files/{id}` until its status is `done` or `failed`.
fn finished(server: &Afterward, location: &str) -> Value {
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let response = server.get(location);
        assert_eq!(response.status(), 200);
        let body = response.json();
        if body["status"] == "done" || body["status"] == "failed" {
            return body;
        }
        assert!(
            ["queued", "running"].contains(&body["status"].as_str().unwrap()),
            "{body}"
        );
        assert!(
            Instant::now() < deadline,
            "the upload never finished: {body}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_upload_is_accepted_then_counted_in_the_background() {
    let server = Afterward::start(&[]);
    let response = server
        .request("POST", "/files")
        .body("one two three\nfour five\nsix\n")
        .send();
    assert_eq!(response.status(), 202);
    let body = response.json();
    let id = body["id"].as_str().expect("an id").to_owned();
    assert_eq!(body, json!({"id": id, "status": "queued"}));
    let location = response
        .header("Location")
        .expect("a Location header")
        .to_owned();
    assert_eq!(location, format!("/files/{id}"));

    assert_eq!(
        finished(&server, &location),
        json!({"id": id, "status": "done", "result": {"bytes": 28, "lines": 3, "words": 6}})
    );

    let binary = server
        .request("POST", "/files")
        .body(vec![0xff, 0xfe])
        .send();
    let failed = finished(&server, binary.header("Location").unwrap());
    assert_eq!(failed["status"], "failed");
    // The count is a job: a file that is not text makes it dead at once.
    server.wait_for_metric("afterward_jobs_dead_total", 1.0);
    assert_eq!(server.metric("afterward_jobs_retried_total"), 0.0);
}

#[test]
fn unknown_files_wrong_methods_and_large_bodies_are_json_errors() {
    let server = Afterward::start(&["--max-body-bytes", "10"]);
    let missing = server.get("/files/0000");
    assert_eq!(missing.status(), 404);
    assert!(missing.json()["detail"].is_string());

    let unknown = server.get("/nope");
    assert_eq!(
        (unknown.status(), unknown.json()["detail"].clone()),
        (404, json!("Not Found"))
    );

    let wrong_method = server.request("DELETE", "/health").send();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.header("Allow"), Some("GET, HEAD"));

    let large = server.request("POST", "/files").body("01234567890").send();
    assert_eq!(large.status(), 413);
    assert!(large.json()["detail"]
        .as_str()
        .unwrap()
        .contains("10 bytes"));
}

#[test]
fn health_answers_ok() {
    let server = Afterward::start(&[]);
    let response = server.get("/health");
    assert_eq!(
        (response.status(), response.json()),
        (200, json!({"status": "ok"}))
    );
}

#[test]
fn request_ids_are_echoed_and_logged_with_each_access_line() {
    let mut server = Afterward::start(&[]);
    let response = server
        .request("POST", "/send-notification/ada@example.com?q=x")
        .header("X-Request-Id", "trace-7")
        .send();
    assert_eq!(response.header("X-Request-Id"), Some("trace-7"));
    let generated = server.get("/health");
    let id = generated
        .header("X-Request-Id")
        .expect("a generated id")
        .to_owned();
    assert!(server.stop().success());

    let log = server.stderr();
    let access = log
        .lines()
        .find(|l| l.contains("request_id=trace-7"))
        .unwrap_or_else(|| panic!("no access line for trace-7 in\n{log}"));
    for part in [
        "POST",
        "/send-notification/ada@example.com?q=x",
        " 200 ",
        "ms",
        "tasks=2",
    ] {
        assert!(access.contains(part), "{part:?} missing from {access:?}");
    }
    assert!(log.contains(&format!("request_id={id}")));
}

#[test]
fn malformed_input_never_kills_the_process() {
    let server = Afterward::start(&[]);
    let garbage: [&[u8]; 6] = [
        b"\x00\x01\x02\xff\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /files HTTP/1.1\r\nContent-Length: abc\r\n\r\nxyz",
        b"GET /%ZZ%FF HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /files HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX: \xff\xfe\r\n\r\n",
    ];
    for bytes in garbage {
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        stream.write_all(bytes).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
    assert_eq!(server.get("/health").status(), 200);
}

#[test]
fn responses_that_change_over_time_say_no_store() {
    let server = Afterward::start(&[]);
    let accepted = server.request("POST", "/files").body("a b").send();
    let location = accepted.header("Location").unwrap().to_owned();
    for path in ["/health", "/metrics", &*location, "/files/0000000000000000"] {
        let response = server.get(path);
        assert_eq!(
            response.header("Cache-Control"),
            Some("no-store"),
            "{path}: {}",
            response.status()
        );
    }
}

#[test]
fn a_line_break_in_a_request_cannot_forge_log_lines() {
    let mut server = Afterward::start(&[]);
    let response =
        server.post("/send-notification/eve%0Amessage%20to%20bob@example.com?q=x%0D%0Ay");
    assert_eq!(response.status(), 200);
    assert!(server.stop().success());
    assert_eq!(
        read(&server.log_file()),
        "found query: x\\r\\ny\nmessage to eve\\nmessage to bob@example.com\n"
    );
}
