//! TLS and CORS (in progress).
