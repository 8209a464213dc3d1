//! Many concurrent clients: every task runs exactly once, and different
//! requests' tasks run in parallel across the pool.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;

use afterward::testing::{TestRequest, TestServer};
use afterward::{App, BackgroundTasks, Path, Server};
use support::Gate;

#[test]
fn many_concurrent_clients_every_task_runs_exactly_once() {
    const CLIENTS: usize = 32;
    const REQUESTS: usize = 20;
    let runs: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let log = runs.clone();
    let app = App::new().post(
        "/work/{key}",
        move |Path(key): Path<String>, tasks: BackgroundTasks| {
            for step in 0..3u8 {
                let (log, key) = (log.clone(), key.clone());
                tasks.add_task(move || log.lock().unwrap().entry(key).or_default().push(step));
            }
        },
    );
    let server = TestServer::with_builder(Server::builder().workers(8).background_workers(2), app);

    let addr = server.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            thread::spawn(move || {
                for request in 0..REQUESTS {
                    let path = format!("/work/{client}-{request}");
                    assert_eq!(TestRequest::new(addr, "POST", &path).send().status(), 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    server.wait_idle();

    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), CLIENTS * REQUESTS);
    assert!(runs.values().all(|steps| steps == &[0, 1, 2]));
    let stats = server.stats();
    let total = (CLIENTS * REQUESTS * 3) as u64;
    assert_eq!((stats.scheduled, stats.completed), (total, total));
    assert_eq!(stats.requests, (CLIENTS * REQUESTS) as u64);
}

#[test]
fn different_requests_tasks_run_in_parallel() {
    // Each task opens its own gate and waits for the other's: both can only
    // finish if they run at the same time on two background threads.
    let (a, b) = (Gate::new(), Gate::new());
    let met = Arc::new(Mutex::new(Vec::new()));
    let (gates, log) = ((a.clone(), b.clone()), met.clone());
    let app = App::new().post(
        "/meet/{who}",
        move |Path(who): Path<String>, tasks: BackgroundTasks| {
            let (mine, theirs) = match who.as_str() {
                "a" => (gates.0.clone(), gates.1.clone()),
                _ => (gates.1.clone(), gates.0.clone()),
            };
            let log = log.clone();
            tasks.add_task(move || {
                mine.open();
                let met = theirs.wait();
                log.lock().unwrap().push(met);
            });
        },
    );
    let server = TestServer::with_builder(Server::builder().background_workers(2), app);

    server.post("/meet/a").send();
    server.post("/meet/b").send();
    server.wait_idle();
    assert_eq!(*met.lock().unwrap(), [true, true]);
}
