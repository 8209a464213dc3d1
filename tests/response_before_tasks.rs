//! Tasks start only after the response is on the wire: the client never waits
//! for them.

mod support;

use afterward::testing::TestServer;
use afterward::{App, BackgroundTask, BackgroundTasks, Response};
use support::Gate;

#[test]
fn the_client_reads_the_whole_response_while_the_task_is_still_blocked() {
    // The task blocks until the test has read the whole response. If the
    // server ran tasks before responding, the response would only arrive after
    // the task gave up waiting, and the task would report `false`.
    let client_has_response = Gate::new();
    let task_saw_it = Gate::new();
    let (gate, done) = (client_has_response.clone(), task_saw_it.clone());
    let app = App::new().post("/slow", move |tasks: BackgroundTasks| {
        let (gate, done) = (gate.clone(), done.clone());
        tasks.add_task(move || {
            if gate.wait() {
                done.open();
            }
        });
        "answered before the task"
    });
    let server = TestServer::new(app);

    let response = server.post("/slow").send();
    assert_eq!(response.text(), "answered before the task");
    client_has_response.open();

    assert!(
        task_saw_it.wait(),
        "the task never saw the client's response"
    );
    server.wait_idle();
    assert_eq!(server.stats().completed, 1);
}

#[test]
fn a_response_task_also_waits_for_the_response() {
    let client_has_response = Gate::new();
    let task_saw_it = Gate::new();
    let (gate, done) = (client_has_response.clone(), task_saw_it.clone());
    let app = App::new().get("/", move || {
        let (gate, done) = (gate.clone(), done.clone());
        Response::text("body").with_background(BackgroundTask::new(move || {
            if gate.wait() {
                done.open();
            }
        }))
    });
    let server = TestServer::new(app);

    assert_eq!(server.get("/").send().text(), "body");
    client_has_response.open();
    assert!(task_saw_it.wait());
}
