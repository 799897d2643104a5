//! Patching: chosen layers hand the model another run's tensor instead of their own.

use std::sync::Arc;

use candle_core::Tensor;
use globset::GlobSet;

use crate::runfile::Run;
use crate::Result;

/// The patch source and the globs of the layers to patch, for one recording.
pub(super) struct Patch {
    run: Arc<Run>,
    globs: GlobSet,
    applied: Vec<String>,
    missing: Vec<String>,
}

impl Patch {
    /// `None` when nothing is to be patched; an error for globs without a run.
    pub(super) fn new(run: Option<&Arc<Run>>, globs: &[String]) -> Result<Option<Patch>> {
        let globs = super::compile(globs, "patch")?;
        match (run, globs) {
            (Some(run), Some(globs)) => Ok(Some(Patch {
                run: run.clone(),
                globs,
                applied: Vec::new(),
                missing: Vec::new(),
            })),
            (None, Some(_)) => Err(crate::Error::option(
                "Recorder::patch needs a run to patch from: call patch_from(run) too",
            )),
            _ => Ok(None),
        }
    }

    /// The tensor layer `name` (output `own`) should hand on, when it is patched.
    pub(super) fn apply(
        &mut self,
        name: &str,
        own: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        if !self.globs.is_match(name) {
            return Ok(None);
        }
        if self.run.layer(name).is_none() {
            self.missing.push(name.to_string());
            return Ok(None);
        }
        let from = self.run.id().to_string();
        let fail = |what: String| {
            candle_core::Error::Msg(format!(
                "cannot patch layer {name} from run {from:?}: {what}"
            ))
        };
        let t = self
            .run
            .tensor(name)
            .map_err(|e| fail(crate::one_line(&e)))?;
        let t = fit(t, own.dims()).map_err(fail)?;
        let t = t.to_dtype(own.dtype())?.to_device(own.device())?;
        self.applied.push(name.to_string());
        Ok(Some(t))
    }

    /// What the run facts say about the patching (`patched`).
    pub(super) fn report(self) -> serde_json::Value {
        serde_json::json!({
            "from": self.run.id(),
            "layers": self.applied,
            "missing": self.missing,
        })
    }
}

/// `t` reshaped to `dims` when the two differ only by leading 1s.
fn fit(t: Tensor, dims: &[usize]) -> std::result::Result<Tensor, String> {
    if t.dims() == dims {
        return Ok(t);
    }
    if crate::runfile::same_but_leading_ones(t.dims(), dims) {
        return t.reshape(dims).map_err(|e| e.to_string());
    }
    Err(format!(
        "its shape there is {:?}, the layer's output here is {:?}",
        t.dims(),
        dims
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{tap, Recorder};
    use candle_core::{DType, Device};

    fn reference() -> Run {
        let x = Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu).unwrap();
        Recorder::new("ref")
            .record(|| tap("a", &x.squeeze(0)?))
            .unwrap()
            .1
    }

    #[test]
    fn leading_ones_dtype_and_missing_layers() {
        let r = Arc::new(reference());
        let own = Tensor::zeros((1, 1, 3), DType::F16, &Device::Cpu).unwrap();
        let (out, run) = Recorder::new("p")
            .patch_from(r.clone())
            .patch("*")
            .record(|| {
                let a = tap("a", &own)?;
                let b = tap("b", &own)?;
                Ok((a, b))
            })
            .unwrap();
        assert_eq!(out.0.dims(), &[1, 1, 3]);
        assert_eq!(out.0.dtype(), DType::F16);
        assert_eq!(
            out.0
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            [1.0, 2.0, 3.0]
        );
        assert_eq!(
            out.1.id(),
            own.id(),
            "a layer the run lacks keeps its own output"
        );
        let facts = &run.info().extra["patched"];
        assert_eq!(facts["layers"], serde_json::json!(["a"]));
        assert_eq!(facts["missing"], serde_json::json!(["b"]));
        assert_eq!(
            run.values("a").unwrap(),
            [0.0, 0.0, 0.0],
            "own output recorded"
        );
    }

    #[test]
    fn a_wrong_shape_is_an_error_naming_the_layer() {
        let r = reference();
        let own = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let err = Recorder::new("p")
            .patch_from(r)
            .patch("a")
            .record(|| tap("a", &own))
            .unwrap_err();
        let msg = crate::one_line(&err);
        assert!(
            msg.contains("cannot patch layer a") && msg.contains("[3]"),
            "{msg}"
        );
        assert!(Recorder::new("p").patch("a").record(|| Ok(())).is_err());
    }
}
