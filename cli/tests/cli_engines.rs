//! `--engine`: the binary on tiny_http (built with `--features tiny-http`)
//! warns once at start-up; on the builtin engine it does not.

mod support;

#[cfg(feature = "tiny-http")]
#[test]
fn the_binary_on_tiny_http_warns_once_at_start_up() {
    use support::cli::Afterward;
    let mut tiny = Afterward::start(&["--engine", "tiny-http"]);
    assert_eq!(tiny.get("/health").status(), 200);
    assert!(tiny
        .get("/health")
        .header("Server")
        .unwrap()
        .starts_with("tiny-http"));
    assert!(tiny.stop().success());
    let log = tiny.stderr();
    assert_eq!(
        log.matches("the tiny-http engine has no timeouts").count(),
        1,
        "{log}"
    );
}

#[test]
fn the_binary_on_its_own_engine_does_not_warn() {
    let mut builtin = support::cli::Afterward::start(&["--engine", "builtin"]);
    assert_eq!(builtin.get("/health").header("Server"), Some("afterward"));
    assert!(builtin.stop().success());
    assert!(!builtin.stderr().contains("has no timeouts"));
}

#[cfg(not(feature = "tiny-http"))]
#[test]
fn without_the_feature_tiny_http_is_a_usage_error() {
    let (status, _, stderr) = support::cli::run(&["--engine", "tiny-http"], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("feature `tiny-http`"), "{stderr}");
}
