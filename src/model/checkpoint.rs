//! Hugging Face GPT-2 checkpoints in safetensors: load with or without the
//! `transformer.` prefix and with Conv1D weights as (in, out), which is also our layout,
//! so nothing is transposed; save in exactly the form `save_pretrained` writes, so
//! `GPT2LMHeadModel.from_pretrained` opens a wgformer checkpoint. Every failure names the
//! file and tensor. Writes are atomic: a temporary file renamed into place.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::model::config::Gpt2Config;
use crate::model::params::gpt2_param_specs;

const PREFIX: &str = "transformer.";

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// Read one f32 tensor's values, checking dtype and shape. `file` names the source.
fn read_f32(file: &str, name: &str, view: &TensorView, shape: &[usize]) -> Result<Vec<f32>> {
    if view.dtype() != Dtype::F32 {
        return Err(Error::DType {
            tensor: format!("{file}: {name}"),
            expected: "F32".into(),
            found: format!("{:?}", view.dtype()),
        });
    }
    if view.shape() != shape {
        return Err(Error::Shape {
            tensor: format!("{file}: {name}"),
            expected: shape.to_vec(),
            found: view.shape().to_vec(),
        });
    }
    Ok(bytemuck::pod_collect_to_vec(view.data()))
}

/// Load every parameter of `cfg` from the safetensors file at `path`, in the order of
/// `gpt2_param_specs`. Names may carry the `transformer.` prefix or not; a tied
/// `lm_head.weight`, if present, must equal `wte`; attention-mask buffers that old
/// checkpoints carry are ignored.
pub fn load_gpt2_safetensors(path: &Path, cfg: &Gpt2Config) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    gpt2_values_from_bytes(&bytes, cfg, &path.display().to_string())
}

/// [`load_gpt2_safetensors`] from the bytes of the file (the browser fetches them);
/// `file` names it in errors.
pub fn gpt2_values_from_bytes(bytes: &[u8], cfg: &Gpt2Config, file: &str) -> Result<Vec<Vec<f32>>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Invalid(format!("{file}: not a safetensors file: {e}")))?;
    let mut used = HashSet::new();
    let mut out = Vec::new();
    for spec in gpt2_param_specs(cfg) {
        let prefixed = format!("{PREFIX}{}", spec.name);
        let (key, view) = match st.tensor(&prefixed) {
            Ok(v) => (prefixed, v),
            Err(_) => match st.tensor(&spec.name) {
                Ok(v) => (spec.name.clone(), v),
                Err(_) => {
                    return Err(Error::Invalid(format!(
                        "{file}: missing tensor {prefixed} (or {}), expected shape {:?}",
                        spec.name, spec.shape
                    )))
                }
            },
        };
        out.push(read_f32(file, &key, &view, &spec.shape)?);
        used.insert(key);
    }
    if let Ok(head) = st.tensor("lm_head.weight") {
        let head = read_f32(file, "lm_head.weight", &head, &[cfg.vocab_size, cfg.n_embd])?;
        if head != out[0] {
            return Err(Error::Invalid(format!(
                "{file}: lm_head.weight differs from wte; wgformer ties the output head to the \
                 token embedding, as GPT-2 does"
            )));
        }
        used.insert("lm_head.weight".into());
    }
    let ignored: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !used.contains(*n))
        .filter(|n| !(n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias")))
        .map(|n| n.to_string())
        .collect();
    if !ignored.is_empty() {
        log::warn!(
            "{file}: ignoring tensors not in a GPT-2: {}",
            ignored.join(", ")
        );
    }
    Ok(out)
}

/// Write `values` (in `gpt2_param_specs` order) as a Hugging Face GPT-2 safetensors file,
/// names with the `transformer.` prefix, atomically.
pub fn save_gpt2_safetensors(path: &Path, cfg: &Gpt2Config, values: &[Vec<f32>]) -> Result<()> {
    let specs = gpt2_param_specs(cfg);
    assert_eq!(specs.len(), values.len(), "one value vector per parameter");
    let mut views = BTreeMap::new();
    for (spec, v) in specs.iter().zip(values) {
        assert_eq!(v.len(), spec.numel(), "{}: element count", spec.name);
        let view = TensorView::new(Dtype::F32, spec.shape.clone(), bytemuck::cast_slice(v))
            .map_err(|e| Error::Invalid(format!("{}: {e}", spec.name)))?;
        views.insert(format!("{PREFIX}{}", spec.name), view);
    }
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename,
/// so a crash leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(d) = dir {
            // Persist the rename itself where the platform allows opening directories.
            if let Ok(d) = std::fs::File::open(d) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path, e)
    })
}
