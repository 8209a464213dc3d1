//! [`Handler`]: functions whose arguments are extractors.

use std::sync::Arc;

use crate::http_error::HttpError;
use crate::request::{FromRequest, Request};
use crate::response::{IntoResponse, Response};

/// A function that can handle requests: `Fn(T1, T2, ...) -> R` where every `Ti`
/// is a [`FromRequest`] extractor (up to 12) and `R` is an [`IntoResponse`].
///
/// It is implemented for you; `Args` is the tuple of argument types and only
/// serves to tell the implementations apart.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid handler",
    note = "a handler is a function (or closure) whose arguments all implement `FromRequest` \
            (at most 12) and whose return type implements `IntoResponse`; \
            check each argument type"
)]
pub trait Handler<Args>: Send + Sync + 'static {
    /// Extracts the arguments and calls the function. `Err` means an argument
    /// was rejected and the function did not run.
    fn call(&self, request: &mut Request<'_>) -> Result<Response, HttpError>;
}

/// A handler with its argument types erased, as the router stores it.
pub(crate) type BoxedHandler =
    Arc<dyn Fn(&mut Request<'_>) -> Result<Response, HttpError> + Send + Sync>;

pub(crate) fn boxed<H: Handler<Args>, Args>(handler: H) -> BoxedHandler {
    Arc::new(move |request: &mut Request<'_>| handler.call(request))
}

macro_rules! impl_handler {
    ($($arg:ident),*) => {
        impl<F, R, $($arg,)*> Handler<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> R + Send + Sync + 'static,
            R: IntoResponse,
            $($arg: FromRequest,)*
        {
            #[allow(non_snake_case, unused_variables)]
            fn call(&self, request: &mut Request<'_>) -> Result<Response, HttpError> {
                $(let $arg = $arg::from_request(request)?;)*
                Ok(self($($arg),*).into_response())
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);
