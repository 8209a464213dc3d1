//! The layering lint: every reference from one room of `src/` to another
//! points down the table in ARCHITECTURE.md ("Layering"), so that no import
//! circle can come back unnoticed.
//!
//! It reads each file's code (comments, `mod` lines, a folder's own
//! `use self::` re-exports and `#[cfg(test)]` modules left out), finds every
//! `crate::`, `super::` and `self::` path, resolves it to the file that
//! defines it (a name re-exported at the crate root to the room that
//! defines it), and checks, in the innermost folder holding both files,
//! that the referring room's floor is above the referred one's.
//!
//! Two arrows are allowed without a floor: a folder's `mod.rs` uses the
//! files it declares, and a file uses the items of its own folder's
//! `mod.rs` (the types the folder's files share).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// A module as the chain of names from the crate root (`[]` is `lib.rs`).
type Module = Vec<String>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/`, by module.
fn modules() -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(src).unwrap().with_extension("");
                let mut module: Module = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|last| last == "mod") || module == ["lib"] {
                    module.pop();
                }
                out.insert(module, path);
            }
        }
    }
    let src = root().join("src");
    let mut out = BTreeMap::new();
    walk(&src, &src, &mut out);
    out
}

/// A line of code, or where a file's code stops counting.
enum Line {
    Code(String),
    /// `#[cfg(test)]`: the item after it is for tests only.
    TestOnly,
}

/// The lines of code of `text`: comment lines left out, trailing comments
/// cut (a `//` after a space: `"redis://…"` in a string stays), and a `use`
/// over several lines joined into one.
fn code_lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut open_use: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed == "#[cfg(test)]" {
            out.push(Line::TestOnly);
            continue;
        }
        let code = line.find(" //").map_or(line, |at| &line[..at]).trim();
        if let Some(statement) = open_use.as_mut() {
            statement.push_str(code);
            if code.ends_with(';') {
                out.push(Line::Code(open_use.take().unwrap()));
            }
            continue;
        }
        let is_use = ["use ", "pub use ", "pub(crate) use "]
            .iter()
            .any(|start| code.starts_with(start));
        if is_use && !code.ends_with(';') {
            open_use = Some(code.to_owned());
            continue;
        }
        out.push(Line::Code(code.to_owned()));
    }
    out
}

/// `mod name;` (with any visibility): the name.
fn declared_module(line: &str) -> Option<&str> {
    let rest = line
        .trim()
        .trim_start_matches("pub(crate) ")
        .trim_start_matches("pub ");
    rest.strip_prefix("mod ")?.strip_suffix(';')
}

/// Whether `line` re-exports from its own folder (`pub use self::…`).
fn own_reexport(line: &str) -> bool {
    let rest = line
        .trim()
        .trim_start_matches("pub(crate) ")
        .trim_start_matches("pub ");
    rest.starts_with("use self::")
}

/// The files declared under `#[cfg(test)]` (`#[cfg(test)] mod memory;`).
fn test_only_modules(modules: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    let mut out = BTreeSet::new();
    for (module, path) in modules {
        let lines = code_lines(&fs::read_to_string(path).unwrap());
        for pair in lines.windows(2) {
            if let [Line::TestOnly, Line::Code(next)] = pair {
                if let Some(name) = declared_module(next) {
                    let mut child = module.clone();
                    child.push(name.to_owned());
                    out.insert(child);
                }
            }
        }
    }
    out
}

/// The names `lib.rs` re-exports, by the room that defines them
/// (`pub use crate::jobs::{Job, …};`).
fn root_names(modules: &BTreeMap<Module, PathBuf>) -> HashMap<String, Module> {
    let text = fs::read_to_string(&modules[&Vec::new()]).unwrap();
    let mut out = HashMap::new();
    let mut statement = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if statement.is_empty() && !trimmed.starts_with("pub use crate::") {
            continue;
        }
        statement.push_str(trimmed);
        if !trimmed.ends_with(';') {
            continue;
        }
        let path = statement["pub use crate::".len()..].trim_end_matches(';');
        let (room, names) = match path.split_once("::{") {
            Some((room, names)) => (room, names.trim_end_matches('}')),
            None => path.rsplit_once("::").unwrap(),
        };
        let room: Module = room.split("::").map(str::to_owned).collect();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            out.insert(name.to_owned(), room.clone());
        }
        statement.clear();
    }
    out
}

/// The paths of a `use` tree or a path expression starting at `text`:
/// `a::b::{c, d::{e, f}}` gives `a::b::c`, `a::b::d::e`, `a::b::d::f`.
fn expand(text: &str) -> Vec<Vec<String>> {
    fn tree(text: &str, at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let bytes = text.as_bytes();
        let mut path = prefix.to_vec();
        loop {
            let start = *at;
            while *at < bytes.len() && (bytes[*at].is_ascii_alphanumeric() || bytes[*at] == b'_') {
                *at += 1;
            }
            if *at > start {
                path.push(text[start..*at].to_owned());
            }
            if text[*at..].starts_with("::{") {
                *at += 3;
                loop {
                    while *at < bytes.len() && (bytes[*at] == b' ' || bytes[*at] == b',') {
                        *at += 1;
                    }
                    if *at >= bytes.len() || bytes[*at] == b'}' {
                        *at += 1;
                        return;
                    }
                    tree(text, at, &path, out);
                }
            }
            if text[*at..].starts_with("::") {
                *at += 2;
                continue;
            }
            out.push(path);
            return;
        }
    }
    let mut out = Vec::new();
    tree(text, &mut 0, &[], &mut out);
    out
}

/// The modules `line` refers to by a `crate::`, `super::` or `self::` path,
/// each resolved to the longest chain naming a file (a name re-exported by
/// `lib.rs` to the room that defines it), with the path as written.
fn references(
    line: &str,
    from: &Module,
    is_folder: bool,
    modules: &BTreeMap<Module, PathBuf>,
    root_names: &HashMap<String, Module>,
) -> Vec<(Module, String)> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut at = 0;
        while let Some(found) = line[at..].find(start) {
            let begin = at + found;
            at = begin + start.len();
            // A whole word: not `$crate::` nor `my_crate::`, nor a `super::`
            // inside a path already read.
            if begin > 0
                && (bytes[begin - 1].is_ascii_alphanumeric() || b"_$:".contains(&bytes[begin - 1]))
            {
                continue;
            }
            for path in expand(&line[begin..]) {
                let mut target: Module = match path[0].as_str() {
                    "crate" => Vec::new(),
                    // A folder's `mod.rs` is the folder itself.
                    "self" if is_folder => from.clone(),
                    // `self::` in a file names items of the file itself.
                    "self" => continue,
                    _ => {
                        let mut up = from.clone();
                        up.pop();
                        up
                    }
                };
                for part in &path[1..] {
                    if part == "super" {
                        target.pop();
                        continue;
                    }
                    let mut deeper = target.clone();
                    deeper.push(part.clone());
                    if modules.contains_key(&deeper) {
                        target = deeper;
                        continue;
                    }
                    if target.is_empty() {
                        if let Some(room) = root_names.get(part) {
                            target.clone_from(room);
                        }
                    }
                    break;
                }
                out.push((target, path.join("::")));
            }
        }
    }
    out
}

/// The layering table: for each folder (`src/`, `src/engine/`, …) its
/// rooms' floors, 0 the top.
fn table() -> BTreeMap<Module, HashMap<String, usize>> {
    let text = fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let marker = "<!-- layering: checked by tests/layering.rs -->";
    let after = &text[text
        .find(marker)
        .expect("ARCHITECTURE.md has the layering table")
        + marker.len()..];
    let block = after
        .split("```")
        .nth(1)
        .expect("the table is the code block after the marker");
    let mut out: BTreeMap<Module, HashMap<String, usize>> = BTreeMap::new();
    let mut folder: Option<Module> = None;
    for line in block.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        if !line.starts_with(' ') {
            let name = line.trim().trim_end_matches(':').trim_end_matches('/');
            let module: Module = name
                .split('/')
                .skip(1) // `src`
                .map(str::to_owned)
                .collect();
            out.entry(module.clone()).or_default();
            folder = Some(module);
            continue;
        }
        let floors = out
            .get_mut(folder.as_ref().expect("a folder first"))
            .unwrap();
        let floor = floors.values().copied().max().map_or(0, |f| f + 1);
        for room in line.split_whitespace() {
            assert!(
                floors.insert(room.to_owned(), floor).is_none(),
                "{room} twice in the table"
            );
        }
    }
    out
}

/// The name a module has in its folder's table (`mod` for `mod.rs` and
/// `lib` for `lib.rs`, which are their folder's façade).
fn room_name(module: &Module, depth: usize) -> String {
    module.get(depth).cloned().unwrap_or_else(|| {
        if depth == 0 {
            "lib".into()
        } else {
            "mod".into()
        }
    })
}

#[test]
fn every_reference_between_rooms_points_down_the_layering_table() {
    let modules = modules();
    let test_only = test_only_modules(&modules);
    let root_names = root_names(&modules);
    let table = table();
    let mut wrong = Vec::new();
    for (module, path) in &modules {
        if test_only.iter().any(|t| module.starts_with(t)) || module.is_empty() {
            continue;
        }
        let is_folder = path.ends_with("mod.rs");
        let shown = path.strip_prefix(root()).unwrap().display().to_string();
        let mut lines = code_lines(&fs::read_to_string(path).unwrap())
            .into_iter()
            .peekable();
        while let Some(line) = lines.next() {
            let line = match line {
                Line::TestOnly => {
                    // `#[cfg(test)] mod tests { … }` ends the file's code.
                    if let Some(Line::Code(next)) = lines.peek() {
                        if next.trim_start().starts_with("mod tests") {
                            break;
                        }
                    }
                    continue;
                }
                Line::Code(line) => line,
            };
            if declared_module(&line).is_some() || (is_folder && own_reexport(&line)) {
                continue;
            }
            for (target, written) in references(&line, module, is_folder, &modules, &root_names) {
                if target == *module {
                    continue;
                }
                // A folder's façade uses its files; a file uses its folder's
                // shared items.
                if target.starts_with(module) && is_folder {
                    continue;
                }
                if module.starts_with(&target) && !target.is_empty() {
                    continue;
                }
                let depth = module
                    .iter()
                    .zip(&target)
                    .take_while(|(a, b)| a == b)
                    .count();
                let folder: Module = module[..depth].to_vec();
                let Some(floors) = table.get(&folder) else {
                    wrong.push(format!(
                        "{shown}: folder src/{} is not in the layering table",
                        folder.join("/")
                    ));
                    continue;
                };
                let (from, to) = (room_name(module, depth), room_name(&target, depth));
                match (floors.get(&from), floors.get(&to)) {
                    (Some(a), Some(b)) if a < b => {}
                    (Some(_), Some(_)) => wrong.push(format!(
                        "{shown}: `{written}` points from {from} to {to}, not below it in src/{}",
                        folder.join("/")
                    )),
                    _ => wrong.push(format!(
                        "{shown}: {from} or {to} is missing from the table of src/{}",
                        folder.join("/")
                    )),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_layering_table_names_every_room_and_only_rooms_that_exist() {
    let modules = modules();
    let test_only = test_only_modules(&modules);
    let table = table();
    let mut wrong = Vec::new();
    for module in modules
        .keys()
        .filter(|m| !m.is_empty() && !test_only.contains(*m))
    {
        let folder = module[..module.len() - 1].to_vec();
        let name = module.last().unwrap();
        if !table
            .get(&folder)
            .is_some_and(|floors| floors.contains_key(name))
        {
            wrong.push(format!("{} is not in the table", module.join("/")));
        }
    }
    for (folder, floors) in &table {
        for name in floors.keys() {
            let mut module = folder.clone();
            if name != "mod" && name != "lib" {
                module.push(name.clone());
            }
            if !modules.contains_key(&module) {
                wrong.push(format!(
                    "src/{}/{name} is in the table but not in src/",
                    folder.join("/")
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
