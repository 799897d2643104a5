//! # candlelight
//!
//! See inside models written with HuggingFace candle: record every layer's
//! activations of a forward pass into one safetensors **run file**, render runs
//! into PNG galleries, show them inline in evcxr notebooks, and compare runs layer
//! by layer.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use candlelight::{tap, Recorder, Run};
//!
//! let x = Tensor::arange(0f32, 6., &Device::Cpu)?.reshape((1, 6))?;
//! let (_y, run) = Recorder::new("doc").record(|| tap("relu", &x.relu()?))?;
//! let dir = tempfile::tempdir()?;
//! let path = run.save(dir.path())?;            // <run-id>.safetensors, atomically
//! let back = Run::open(&path)?;                // header only; layers read when asked
//! assert_eq!(back.values("relu")?, vec![0., 1., 2., 3., 4., 5.]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The run-file format and gallery layout are described in `docs/FORMAT.md`.

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

// Lets code written for users (`candlelight::Scope`, the instrumented BERT) build inside the crate.
extern crate self as candlelight;

pub mod diff;
mod error;
#[cfg(feature = "render")]
pub mod gallery;
#[cfg(feature = "instrument")]
pub mod instrument;
pub mod location;
#[cfg(feature = "models")]
pub mod models;
#[cfg(feature = "notebook")]
pub mod notebook;
#[cfg(feature = "render")]
pub mod pages;
mod record;
#[cfg(feature = "remote")]
pub mod remote;
#[cfg(feature = "render")]
pub mod render;
mod runfile;
#[cfg(feature = "serve")]
pub mod serve;
pub mod staging;
mod stats;
mod values;
#[cfg(feature = "watch")]
pub mod watch;

#[cfg(feature = "render")]
pub use diff::gallery::write_diff_gallery;
pub use diff::{diff, DiffOptions, LayerDiff, NameMap, RunDiff, Status};
pub use error::{one_line, Error, Result};
#[cfg(feature = "render")]
pub use gallery::{render_gallery, write_index, GalleryOptions, Manifest};
#[cfg(feature = "notebook")]
pub use notebook::show;
pub use record::{
    is_recording, nn, record_as, record_out, tap, tap_as, tune_malloc_for_recording, with_tracing,
    Recorder, RunWriter, Scope,
};
#[cfg(feature = "render")]
pub use render::{encode_png, render_layer, render_tensor, Colormap, RenderOptions, Scale};
pub use runfile::{
    shape_str, LayerInfo, LayerSummary, Run, RunInfo, EXTENSION, FORMAT_VERSION, HASH_ALGORITHM,
    KEY_LAYERS, KEY_ORDER, KEY_RUN, KEY_VERSION,
};
pub use stats::{Activity, Stats};
pub use values::LayerData;

/// Re-exported so users name dtypes without another dependency.
pub use candle_core::DType;
/// The candle crates candlelight is built on (notebooks need only `:dep candlelight`).
pub use {candle_core, candle_nn};
