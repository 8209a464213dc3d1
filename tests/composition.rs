//! Composing apps: `App::merge` and `App::nest` (FastAPI's
//! `include_router(router, prefix=...)`); a route defined twice is an error
//! when the app is built.

mod support;

use afterward::testing::TestServer;
use afterward::{App, BackgroundTasks, Path, State};
use support::Events;

fn items(events: &Events) -> App {
    let events = events.clone();
    App::new()
        .get("/", || "all items")
        .get("/{id}", |Path(id): Path<u32>| format!("item {id}"))
        .post(
            "/{id}",
            move |Path(id): Path<u32>, tasks: BackgroundTasks| {
                let events = events.clone();
                tasks.add_task(move || events.push(format!("audit item {id}")));
                "updated"
            },
        )
}

#[test]
fn nested_and_merged_apps_serve_their_routes_with_their_state() {
    let events = Events::default();
    let users = App::new().state(String::from("users' state")).get(
        "/users/{user}",
        |Path(user): Path<String>, State(s): State<String>| format!("{user} ({s})"),
    );
    let app = App::new()
        .get("/", || "root")
        .nest("/items", items(&events))
        .nest(
            "/shops/{shop}/stock",
            App::new().get("/{id}", |Path((shop, id)): Path<(String, u32)>| {
                format!("{shop}:{id}")
            }),
        )
        .merge(users);
    let server = TestServer::new(app).waiting_for_tasks();
    assert_eq!(server.get("/").send().text(), "root");
    assert_eq!(server.get("/items").send().text(), "all items");
    assert_eq!(server.get("/items/7").send().text(), "item 7");
    assert_eq!(server.post("/items/7").send().text(), "updated");
    assert_eq!(events.list(), ["audit item 7"]);
    assert_eq!(server.get("/shops/north/stock/3").send().text(), "north:3");
    assert_eq!(server.get("/users/ada").send().text(), "ada (users' state)");
    assert_eq!(server.get("/items/x/y").send().status(), 404);
    assert_eq!(server.request("DELETE", "/items/7").send().status(), 405);
}

#[test]
#[should_panic(expected = "GET /items/{item} is already routed (as GET /items/{id})")]
fn a_route_defined_twice_is_an_error_when_the_app_is_built() {
    let other = App::new().get("/{item}", |Path(item): Path<u32>| item.to_string());
    let _ = App::new()
        .nest("/items", items(&Events::default()))
        .nest("/items", other);
}

#[test]
#[should_panic(expected = "both apps have state of type alloc::string::String")]
fn state_of_one_type_in_both_apps_is_an_error() {
    let a = App::new().state(String::from("a"));
    let _ = App::new().state(String::from("b")).merge(a);
}

#[test]
#[should_panic(expected = "must start with '/' and not end with one")]
fn a_nest_prefix_must_be_a_path_without_a_trailing_slash() {
    let _ = App::new().nest("/items/", App::new());
}
