//! Data: reading ImageFolder trees ([`folder`]), grouped splits ([`split`]), decoding image
//! files ([`image`]), the one preprocessing shared by train, eval and predict ([`transform`]),
//! and the loader that keeps decoded images in memory and assembles batches ahead of the model
//! ([`loader`]).

pub mod card;
pub mod complete;
pub mod dataset;
pub mod duplicates;
pub mod folder;
pub mod image;
pub mod loader;
pub mod sniff;
pub mod split;
pub mod transform;
