//! Security: response headers on every route ([`headers`]) and bearer tokens for the query API ([`auth`]).

pub mod auth;
pub mod headers;
