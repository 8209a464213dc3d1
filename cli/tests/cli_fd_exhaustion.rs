//! Running out of file descriptors: the `afterward` binary, started with a
//! low `RLIMIT_NOFILE`, keeps accepting once descriptors are free again.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use afterward::testing::TestRequest;
use support::cli::BIN;

#[test]
fn the_server_accepts_again_once_descriptors_are_free() {
    // `ulimit -n 48` in a shell, then exec the binary: only the child is limited.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 48 && exec \"$0\" --port 0 --log-file /dev/null",
            BIN,
        ])
        .env("RUST_LOG", "warn")
        .env("AFTERWARD_ENGINE", support::hardening_engine().name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start afterward under a low fd limit");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // Far more connections than the server has descriptors for.
    let hogs: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(hogs.len() > 48, "only {} connections made", hogs.len());
    drop(hogs);

    // Once they are gone the server must serve again (its descriptors free up
    // as it notices each closed connection).
    let deadline = Instant::now() + Duration::from_secs(20);
    let answered = loop {
        let attempt = std::thread::spawn(move || {
            TcpStream::connect(addr).ok()?;
            Some(TestRequest::new(addr, "GET", "/health").send().status())
        });
        if let Ok(Some(200)) = attempt.join() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        answered,
        "the server stopped accepting after running out of descriptors"
    );
}
