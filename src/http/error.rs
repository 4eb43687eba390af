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
