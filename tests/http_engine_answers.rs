//! Every answer is counted: those the engine makes itself (400, 417, 431,
//! 503 over the connection cap, 505) are in the counters like the handlers',
//! and carry a request id (the client's, when a head was read).

mod support;

use afterward::testing::TestServer;
use afterward::App;
use support::raw::{get, Raw};
use support::TEST_TIMEOUT;

#[test]
fn the_engines_own_answers_are_counted_with_a_request_id() {
    let builder = support::hardened()
        .max_connections(1)
        .max_header_bytes(1024);
    let server = TestServer::with_builder(builder, App::new().get("/", || "ok"));
    let refused = |request: &str| {
        // A cap of one: the last connection must have been closed first.
        let closed = |stats: &afterward::Stats| stats.connections_open == 0;
        assert!(server.handle().wait_for(TEST_TIMEOUT, closed));
        let mut raw = Raw::connect(server.addr());
        let _ = raw.send(request.as_bytes());
        raw.response()
    };

    let cases = [
        ("GET / HTTP/1.1\r\nX-Request-Id: client-7\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: x\r\nExpect: later\r\n\r\n", 417),
        (
            &*format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2048)),
            431,
        ),
        ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ];
    let mut ids = Vec::new();
    for (request, status) in cases {
        let response = refused(request);
        assert_eq!(response.status(), status, "{request:?}");
        ids.push(response.header("X-Request-Id").map(str::to_owned));
    }
    assert_eq!(
        ids[0].as_deref(),
        Some("client-7"),
        "the client's id is kept"
    );
    assert!(ids.iter().all(Option::is_some), "{ids:?}");

    // One connection held open fills the cap of one: the next is refused.
    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |stats| stats.connections_open == 0));
    let mut held = Raw::connect(server.addr());
    held.send(&get("/")).unwrap();
    assert_eq!(held.response().status(), 200);
    let busy = Raw::connect(server.addr()).response();
    assert_eq!(busy.status(), 503);
    assert!(busy.header("X-Request-Id").is_some());

    assert!(server
        .handle()
        .wait_for(TEST_TIMEOUT, |stats| stats.requests == 6));
    assert_eq!(server.stats().requests_by_class, [0, 1, 0, 3, 2]);
}
