//! inception: train, evaluate and run InceptionV1 (GoogLeNet) image classifiers on libtorch.
//!
//! - [`cli`]: the command line; [`cmd`]: one module per subcommand.
//! - [`model`]: the networks, their layers and cost account.
//! - [`data`]: image decoding and the shared preprocessing.
//! - [`train`]: the training loop, optimisers, run records; [`config`]: its configuration;
//!   [`metrics`]: classification metrics.
//! - [`cv`]: K-fold cross-validation of a recipe, its statistics and out-of-fold predictions.
//! - [`weights`]: weights from outside (PyTorch `.pth` files, safetensors, URLs, the
//!   published ImageNet weights); [`checkpoint`]: the one-file checkpoint format; [`ensemble`]: checkpoints used as one
//!   model, and test-time augmentation.
//! - [`trust`]: calibration, the screening threshold, conformal prediction sets and
//!   intervals, fitted on cv's out-of-fold predictions.
//! - [`explain`]: Grad-CAM maps; [`plot`]: the pictures (training curves, confusion matrix,
//!   ROC, batch mosaic, cv charts, heat-map overlays).
//! - [`report`]: the page that shows a model to a person (HTML, or a Hugging Face model
//!   card), gathered from a run or a cv folder.
//! - [`device`]: `--device` resolution; [`precision`]: `--precision` and channels-last.
//! - [`runtime`]: process-wide allocator settings for speed; [`system`]: what this installation
//!   has (libtorch, CPU, CUDA devices), for `doctor`; [`text`]: names quoted from files, made
//!   safe to print.

pub mod checkpoint;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod cv;
pub mod data;
pub mod device;
pub mod dist;
pub mod ensemble;
pub mod explain;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod plot;
pub mod precision;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod system;
pub mod text;
pub mod train;
pub mod trust;
pub mod weights;
