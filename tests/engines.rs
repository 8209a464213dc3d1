//! The engine is a choice: the builtin one by default, tiny_http with the
//! `tiny-http` feature, chosen on the builder or with `--engine`; the rest of
//! the server behaves the same on each (the whole functional suite runs on
//! both in CI: `AFTERWARD_ENGINE=tiny-http cargo test --features tiny-http`).

mod support;

use afterward::testing::TestServer;
use afterward::{App, BackgroundTasks, Engine, Server};
use support::{Events, Gate};

/// A handler whose task waits for the test, so the response is known to come first.
fn app(events: Events, gate: Gate) -> App {
    App::new().post("/work", move |tasks: BackgroundTasks| {
        let (events, gate) = (events.clone(), gate.clone());
        tasks.add_task(move || {
            gate.wait();
            events.push("task");
        });
        "accepted"
    })
}

fn served_with(engine: Engine) -> Option<String> {
    let (events, gate) = (Events::default(), Gate::new());
    let server = TestServer::with_builder(
        Server::builder().engine(engine),
        app(events.clone(), gate.clone()),
    );
    let response = server.post("/work").send();
    assert_eq!(
        (response.status(), response.text()),
        (200, "accepted".to_owned())
    );
    assert!(events.list().is_empty(), "the task ran before the response");
    gate.open();
    server.wait_idle();
    assert_eq!(events.list(), ["task"]);
    response.header("Server").map(str::to_owned)
}

#[test]
fn the_builtin_engine_is_the_default() {
    assert_eq!(Engine::default(), Engine::Builtin);
    assert_eq!("builtin".parse(), Ok(Engine::Builtin));
    assert_eq!(served_with(Engine::Builtin).as_deref(), Some("afterward"));
}

#[cfg(feature = "tiny-http")]
#[test]
fn the_tiny_http_engine_serves_the_same_app() {
    assert_eq!("tiny-http".parse(), Ok(Engine::TinyHttp));
    let server = served_with(Engine::TinyHttp).expect("a Server header");
    assert!(server.starts_with("tiny-http"), "{server}");
}

#[cfg(not(feature = "tiny-http"))]
#[test]
fn without_the_feature_tiny_http_is_a_clear_error() {
    let error = "tiny-http".parse::<Engine>().unwrap_err();
    assert!(error.contains("feature `tiny-http`"), "{error}");
}

#[test]
fn an_unknown_engine_name_is_an_error() {
    let error = "hyper".parse::<Engine>().unwrap_err();
    assert!(error.contains("unknown engine `hyper`"), "{error}");
}

/// What keeps the CI run on tiny_http honest: `TestServer` really uses the
/// engine `AFTERWARD_ENGINE` names (the builtin one when it names none).
#[test]
fn test_servers_run_on_the_engine_afterward_engine_names() {
    let expected = std::env::var("AFTERWARD_ENGINE").map_or(Engine::Builtin, |name| {
        name.parse().expect("AFTERWARD_ENGINE names an engine")
    });
    let server = TestServer::new(App::new().get("/", || "ok"));
    let header = server.get("/").send().header("Server").unwrap().to_owned();
    let expected_server = if expected == Engine::Builtin {
        "afterward"
    } else {
        "tiny-http (Rust)"
    };
    assert_eq!(header, expected_server, "engine {}", expected.name());
}
