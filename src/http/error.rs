//! Error answers for requests that cannot be served.

/// A request the server refuses, with the answer Gunicorn gives for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

impl HttpError {
    /// The complete response, ending with the connection closed.
    pub fn to_response(&self) -> Vec<u8> {
        todo!("HttpError::to_response")
    }
}

// Constructors used by the WSGI layer.
impl HttpError {
    pub fn internal(message: String) -> HttpError {
        HttpError {
            status: 500,
            reason: "Internal Server Error",
            message,
        }
    }
    pub fn contradictory_scheme() -> HttpError {
        HttpError {
            status: 400,
            reason: "Bad Request",
            message: "Contradictory scheme headers".into(),
        }
    }
    pub fn request_timeout() -> HttpError {
        HttpError {
            status: 408,
            reason: "Request Timeout",
            message: String::new(),
        }
    }
}
