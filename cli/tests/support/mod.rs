//! Helpers for the binary's tests: the library's test helpers
//! (`tests/support/` at the repository root), and running the binary.

#![allow(dead_code, unused_imports)] // Each test file uses a different part.

#[path = "../../../tests/support/mod.rs"]
mod shared;

pub use shared::*;

pub mod cli;
