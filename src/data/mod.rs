//! Data: decoding image files ([`image`]) and the one preprocessing shared by train, eval and
//! predict ([`transform`]).

pub mod image;
pub mod transform;
