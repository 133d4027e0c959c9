//! The published ImageNet weights a network can start from (`--pretrained`): what file they
//! are and the preprocessing they expect. Which networks have them is the model's table
//! ([`super::Spec::published`], each in the network's own file).

use super::Arch;
use crate::data::transform::Normalization;

/// Published ImageNet weights of a network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    /// The file name, as the cache holds it (its hash prefix included).
    pub file: &'static str,
    /// Where it is downloaded from (`None`: the set-up installs it from a package registry).
    pub url: Option<&'static str>,
    /// What the file is, for messages.
    pub what: &'static str,
    /// GoogLeNet's torchvision `transform_input`, which its ImageNet weights expect.
    pub transform_input: bool,
    /// The normalisation the weights were trained with (after `transform_input`).
    pub normalization: Normalization,
}

/// The ImageNet weights `--pretrained` takes for `arch`; `None` where none are published.
pub fn published(arch: Arch) -> Option<Published> {
    arch.spec().published
}
