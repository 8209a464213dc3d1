//! Shared application state: a map from type to value, set with
//! [`App::state`](crate::App::state) and read with the [`State`] extractor.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// One value per type, shared by every request (and every job). Cloning it
/// clones the `Arc`s, not the values.
#[derive(Default, Clone)]
pub(crate) struct StateMap {
    /// Each value with its type's name, for messages.
    values: HashMap<TypeId, (Arc<dyn Any + Send + Sync>, &'static str)>,
}

impl StateMap {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let name = std::any::type_name::<T>();
        self.values
            .insert(TypeId::of::<T>(), (Arc::new(value), name));
    }

    /// Adds `other`'s values; panics on a type both have.
    pub(crate) fn merge(&mut self, other: StateMap) {
        for (type_id, value) in other.values {
            assert!(
                !self.values.contains_key(&type_id),
                "both apps have state of type {}",
                value.1
            );
            self.values.insert(type_id, value);
        }
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|(value, _)| value.downcast_ref::<T>())
    }
}

/// Extracts the application state of type `T`, registered with
/// [`App::state`](crate::App::state).
///
/// `T` is cloned for each request that asks for it; keep large or mutable
/// state behind an `Arc`. A handler that asks for a type the app does not have
/// answers `500`, and the missing type is logged.
///
/// ```
/// use afterward::{App, State};
/// use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
///
/// #[derive(Clone, Default)]
/// struct Hits(Arc<AtomicU64>);
///
/// fn hit(State(hits): State<Hits>) -> String {
///     (hits.0.fetch_add(1, Ordering::Relaxed) + 1).to_string()
/// }
///
/// let app = App::new().state(Hits::default()).get("/hit", hit);
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);
