//! A background task that appends to a Markdown file, from the handler and
//! from a dependency (a well-known Chinese FastAPI tutorial's example).
//!
//! ```text
//! cargo run --example readme_writer
//! curl -X POST 'http://127.0.0.1:8000/background_tasks?framework=FastAPI'
//! curl -X POST 'http://127.0.0.1:8000/dependency/background_tasks?q=intro'
//! cat README.generated.md
//! ```
//!
//! `ADDR` sets the address (default `127.0.0.1:8000`); `RUST_LOG` the log level.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use afterward::{
    App, BackgroundTasks, Dependency, Depends, HttpError, Json, Query, Request, State,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// The Markdown file the tasks append to.
#[derive(Clone)]
pub struct Readme(pub Arc<PathBuf>);

/// The paragraph the dependency variant appends.
pub const INTRO: &str =
    "\n> 整体的介绍 FastAPI，快速上手开发，结合 API 交互文档逐个讲解核心模块的使用\n";

fn append(readme: &Readme, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&*readme.0)?;
    file.write_all(text.as_bytes())
}

#[derive(Deserialize)]
struct Framework {
    framework: String,
}

/// `POST /background_tasks?framework=X`: appends `\n## X 框架精讲`.
fn run_bg_task(
    Query(Framework { framework }): Query<Framework>,
    State(readme): State<Readme>,
    tasks: BackgroundTasks,
) -> Json<Value> {
    tasks.add_task(move || append(&readme, &format!("\n## {framework} 框架精讲")));
    Json(json!({"message": "任务已在后台运行"}))
}

#[derive(Deserialize)]
struct OptionalQ {
    q: Option<String>,
}

/// The dependency: when `q` is given, appends the introduction.
#[derive(Clone)]
struct ContinueWriteReadme(Option<String>);

impl Dependency for ContinueWriteReadme {
    fn resolve(request: &mut Request<'_>) -> Result<Self, HttpError> {
        let tasks: BackgroundTasks = request.extract()?;
        let State(readme): State<Readme> = request.extract()?;
        let Query(OptionalQ { q }) = request.extract()?;
        if q.is_some() {
            tasks.add_task(move || append(&readme, INTRO));
        }
        Ok(ContinueWriteReadme(q))
    }
}

/// `POST /dependency/background_tasks?q=...`.
fn dependency_run_bg_task(
    Depends(ContinueWriteReadme(q)): Depends<ContinueWriteReadme>,
) -> Json<Value> {
    match q {
        Some(_) => Json(json!({"message": "README.md更新成功"})),
        None => Json(Value::Null),
    }
}

/// The app, appending to `readme`.
pub fn app(readme: PathBuf) -> App {
    App::new()
        .state(Readme(Arc::new(readme)))
        .post("/background_tasks", run_bg_task)
        .post("/dependency/background_tasks", dependency_run_bg_task)
}

fn main() -> Result<(), afterward::Error> {
    common::serve(app("README.generated.md".into()))
}
