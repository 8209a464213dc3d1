//! A response can carry its own background tasks (Starlette's
//! `BackgroundTask`): they run after the request's list and never replace it.

mod support;

use afterward::testing::TestServer;
use afterward::{App, BackgroundTask, BackgroundTasks, Response};
use support::Events;

#[test]
fn response_tasks_run_after_the_request_list_and_do_not_replace_it() {
    let events = Events::default();
    let log = events.clone();
    let app = App::new().post("/", move |tasks: BackgroundTasks| {
        let (first, second, third) = (log.clone(), log.clone(), log.clone());
        tasks.add_task(move || first.push("list 1"));
        tasks.add_task(move || second.push("list 2"));
        let response_log = log.clone();
        Response::new(202)
            .with_background(BackgroundTask::new(move || third.push("response 1")))
            .with_background(BackgroundTask::new(move || response_log.push("response 2")))
    });
    let server = TestServer::new(app);

    assert_eq!(server.post("/").send().status(), 202);
    server.wait_idle();

    assert_eq!(
        events.list(),
        ["list 1", "list 2", "response 1", "response 2"]
    );
    let stats = server.stats();
    assert_eq!((stats.scheduled, stats.completed), (4, 4));
}
