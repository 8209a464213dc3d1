//! README.md stays true to the code it describes.

/// The non-optional `[dependencies]` of Cargo.toml, by name.
fn default_dependencies() -> Vec<String> {
    let manifest = include_str!("../Cargo.toml");
    let section = manifest
        .split("\n[dependencies]\n")
        .nth(1)
        .expect("a [dependencies] section")
        .split("\n[")
        .next()
        .unwrap();
    section
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains('='))
        .filter(|line| !line.contains("optional = true"))
        .map(|line| line.split('=').next().unwrap().trim().to_owned())
        .collect()
}

#[test]
fn the_dependency_count_matches_cargo_toml() {
    let readme = include_str!("../README.md");
    let deps = default_dependencies();
    let words = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let claim = format!("{} small dependencies\n(", words[deps.len()]);
    let start = readme
        .find(&claim)
        .unwrap_or_else(|| panic!("README.md should say {claim:?}: Cargo.toml has {deps:?}"));
    let listed = &readme[start + claim.len()..];
    let listed = &listed[..listed.find(')').unwrap()];
    let mut named: Vec<String> = listed
        .split(", ")
        .map(|d| d.trim().replace('\n', " "))
        .collect();
    let mut expected = deps.clone();
    named.sort();
    expected.sort();
    assert_eq!(named, expected, "the README's list of dependencies");
}

#[test]
fn the_default_library_build_pulls_no_cli_dependency() {
    let deps = default_dependencies();
    for cli_only in ["lexopt", "signal-hook", "env_logger"] {
        assert!(
            !deps.iter().any(|d| d == cli_only),
            "{cli_only} in {deps:?}"
        );
    }
    let manifest = include_str!("../Cargo.toml");
    assert!(
        manifest.contains("\n[features]\n") && manifest.contains("\ndefault = []\n"),
        "the library's default features must stay empty"
    );
    let cli = include_str!("../cli/Cargo.toml");
    assert!(
        cli.contains("name = \"afterward\""),
        "the binary lives in cli/"
    );
}
