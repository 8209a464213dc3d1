//! [`Json`]: a JSON request body, or a JSON response.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http_error::HttpError;
use crate::request::{FromRequest, OptionalFromRequest, Request};
use crate::response::{IntoResponse, Response};

/// A JSON body: as an argument, the request body parsed into `T`; as a return
/// value, `T` serialized with `Content-Type: application/json`.
///
/// As an extractor it needs `Content-Type: application/json` (or another
/// `+json` type), else `415`; a body over the limit answers `413` and one that
/// does not parse as `T` answers `422` with serde's message as the detail.
///
/// ```
/// use afterward::Json;
/// use serde::Deserialize;
/// use serde_json::{json, Value};
///
/// #[derive(Deserialize)]
/// struct Item { name: String, price: f64 }
///
/// fn create(Json(item): Json<Item>) -> Json<Value> {
///     Json(json!({"name": item.name, "price": item.price}))
/// }
/// # let _ = create;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Json<T> {
    fn from_request(request: &mut Request<'_>) -> Result<Self, HttpError> {
        if !is_json(request.headers().get("Content-Type")) {
            return Err(HttpError::new(
                415,
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let body = request.body()?;
        serde_json::from_slice(body)
            .map(Json)
            .map_err(|e| HttpError::unprocessable(format!("invalid JSON body: {e}")))
    }
}

/// `None` when the body is empty; a body that is not JSON, too large or
/// invalid still rejects the request (`415`, `413`, `422`).
impl<T: DeserializeOwned> OptionalFromRequest for Json<T> {
    fn from_request_optional(request: &mut Request<'_>) -> Result<Option<Self>, HttpError> {
        if request.body()?.is_empty() {
            return Ok(None);
        }
        Json::from_request(request).map(Some)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        Response::json(&self.0)
    }
}

fn is_json(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn recognises_json_media_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/problem+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(Some("application/x-www-form-urlencoded")));
        assert!(!is_json(None));
    }
}
