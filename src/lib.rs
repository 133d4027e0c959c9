//! inception: train, evaluate and run InceptionV1 (GoogLeNet) image classifiers on libtorch.
//!
//! Layers point down (docs/layout.md): [`cli`] and [`cmd`] (the command line, one module per
//! subcommand) use the library; nothing in the library uses them.
//!
//! - [`evaluate`]: a model measured on labelled images; [`predict`]: one image's prediction;
//!   [`export`]: a checkpoint or ensemble as one ONNX model ([`onnx`]: the format).
//! - [`runs`]: the folders the tool writes (a run's, a cv's, `oof.csv`), each name once;
//!   [`rng`]: the one seeded generator.
//! - [`model`]: the networks, their layers and cost account.
//! - [`data`]: image decoding and the shared preprocessing.
//! - [`train`]: the training loop, optimisers, writing a run folder; [`config`]: its configuration;
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
pub mod evaluate;
pub mod explain;
pub mod export;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod plot;
pub mod precision;
pub mod predict;
pub mod report;
pub mod rng;
pub mod runs;
pub mod runtime;
pub mod serve;
pub mod stats;
pub mod system;
pub mod text;
pub mod train;
pub mod trust;
pub mod weights;
