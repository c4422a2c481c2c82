//! A run directory and its checkpoints. A run directory holds:
//!
//! ```text
//! run.json          what the run is: model config, tokenizer, data, training settings
//! tokenizer.json    the run's tokenizer
//! tokens.bin/.json  the token cache (pretraining)
//! metrics.jsonl     one JSON record per step and per evaluation
//! loss.svg          train and validation loss against step, redrawn at each evaluation
//! checkpoint/       the latest checkpoint: config.json, model.safetensors, tokenizer.json
//!                   (a Hugging Face model directory), optimizer.safetensors (AdamW's m, v),
//!                   trainer.json (step, seed, data position, best loss, ...)
//! best/             the checkpoint of the lowest validation loss (model files only)
//! ```
//!
//! A checkpoint is written whole into `<name>.tmp/`, each file synced, then swapped in by
//! two renames (`<name>` → `<name>.old`, `<name>.tmp` → `<name>`), so a crash at any
//! moment leaves a complete checkpoint under `<name>` or `<name>.old`, never a torn one;
//! [`find_checkpoint`] looks in both. Resuming restores weights, both AdamW moments and
//! the step bit for bit; the data position and the dropout masks are functions of
//! (seed, step), so the restored run continues exactly where it stopped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels::lossscale::LossScaleState;
use crate::model::checkpoint::{load_gpt2_safetensors, write_atomic};
use crate::model::gpt2::Trainer;
use crate::model::params::gpt2_param_specs;
use crate::model::Gpt2Config;

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// The paths of a run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Create `root` if needed and check that files can be written there, so an
    /// unwritable `--out` fails before any training.
    pub fn create(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| {
            Error::Invalid(format!(
                "--out {}: cannot create the run directory: {e}",
                root.display()
            ))
        })?;
        let probe = root.join(".wgformer-write-test");
        std::fs::write(&probe, b"ok").map_err(|e| {
            Error::Invalid(format!(
                "--out {}: the run directory is not writable: {e}",
                root.display()
            ))
        })?;
        let _ = std::fs::remove_file(&probe);
        Ok(RunDir {
            root: root.to_path_buf(),
        })
    }

    pub fn settings(&self) -> PathBuf {
        self.root.join("run.json")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn plot(&self) -> PathBuf {
        self.root.join("loss.svg")
    }
    pub fn latest(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    pub fn best(&self) -> PathBuf {
        self.root.join("best")
    }
}

/// Everything about a run's progress that is not a tensor (`trainer.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    pub format: u32,
    /// Optimizer steps completed.
    pub step: u64,
    /// The run's seed; with `step` it fixes the next batch and the next dropout masks.
    pub seed: u64,
    /// Index of the next batch: equal to `step`, since batches are drawn per step.
    pub data_position: u64,
    /// Tokens consumed (K·B·T per step).
    pub tokens_seen: u64,
    pub best_val_loss: Option<f32>,
    pub best_step: Option<u64>,
    pub last_val_loss: Option<f32>,
    /// Training wall time so far, over all sessions.
    pub elapsed_s: f64,
    /// The loss scaler of a mixed-precision run (`--precision mixed`), restored on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScaleState>,
}

pub const STATE_FORMAT: u32 = 1;

impl TrainerState {
    pub fn fresh(seed: u64) -> Self {
        TrainerState {
            format: STATE_FORMAT,
            step: 0,
            seed,
            data_position: 0,
            tokens_seen: 0,
            best_val_loss: None,
            best_step: None,
            last_val_loss: None,
            elapsed_s: 0.0,
            loss_scale: None,
        }
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        let s: TrainerState = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: not a trainer state: {e}", path.display())))?;
        if s.format != STATE_FORMAT {
            return Err(Error::Invalid(format!(
                "{}: trainer state format {}, this wgformer reads {STATE_FORMAT}",
                path.display(),
                s.format
            )));
        }
        Ok(s)
    }
}

/// The checkpoint directory to read for `dir`: `dir` itself if complete, else the
/// `dir.old` a crash between the two renames of a save left behind.
pub fn find_checkpoint(dir: &Path) -> Option<PathBuf> {
    let old = sibling(dir, "old");
    [dir.to_path_buf(), old]
        .into_iter()
        .find(|d| d.join("config.json").is_file() && d.join("model.safetensors").is_file())
}

pub fn sibling(dir: &Path, ext: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.{ext}"))
}

/// Resolve `--init-from PATH`: a model directory (config.json + model.safetensors), or a
/// run directory, whose `best/` (else `checkpoint/`) is taken.
pub fn resolve_model_dir(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "--init-from {}: no such file or directory",
            path.display()
        )));
    }
    for d in [
        path.to_path_buf(),
        path.join("best"),
        path.join("checkpoint"),
    ] {
        if let Some(found) = find_checkpoint(&d) {
            return Ok(found);
        }
    }
    Err(Error::Invalid(format!(
        "--init-from {}: not a checkpoint; expected config.json and model.safetensors in it, \
         or a run directory with best/ or checkpoint/",
        path.display()
    )))
}

/// Names and shapes of a model's parameters, in the order its moments are listed.
pub type ParamShapes = Vec<(String, Vec<usize>)>;

fn gpt2_shapes(cfg: &Gpt2Config) -> ParamShapes {
    gpt2_param_specs(cfg)
        .into_iter()
        .map(|s| (s.name, s.shape))
        .collect()
}

/// Serialize AdamW's moments as safetensors: `m.<name>` and `v.<name>` per parameter.
pub fn optimizer_bytes(
    shapes: &ParamShapes,
    m: &[Vec<f32>],
    v: &[Vec<f32>],
    step: u64,
) -> Result<Vec<u8>> {
    let mut views = BTreeMap::new();
    for (kind, values) in [("m", m), ("v", v)] {
        for ((name, shape), vals) in shapes.iter().zip(values) {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(vals))
                .map_err(|e| Error::Invalid(format!("{kind}.{name}: {e}")))?;
            views.insert(format!("{kind}.{name}"), view);
        }
    }
    let meta = HashMap::from([
        ("optimizer".to_string(), "AdamW".to_string()),
        ("step".to_string(), step.to_string()),
    ]);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Invalid(format!("optimizer state: {e}")))
}

/// Host values of every parameter-shaped tensor, in the model's canonical order.
type ParamValues = Vec<Vec<f32>>;

/// Read AdamW's moments (m, v) for parameters `shapes` from `path`, checking every name
/// and shape.
pub fn read_optimizer(path: &Path, shapes: &ParamShapes) -> Result<(ParamValues, ParamValues)> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let file = path.display().to_string();
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Invalid(format!("{file}: not a safetensors file: {e}")))?;
    let read = |kind: &str| -> Result<ParamValues> {
        shapes
            .iter()
            .map(|(pname, shape)| {
                let name = format!("{kind}.{pname}");
                let view = st.tensor(&name).map_err(|_| {
                    Error::Invalid(format!(
                        "{file}: missing tensor {name} (shape {shape:?}); the optimizer state does \
                         not match the model"
                    ))
                })?;
                if view.dtype() != Dtype::F32 || view.shape() != shape.as_slice() {
                    return Err(Error::Shape {
                        tensor: format!("{file}: {name}"),
                        expected: shape.clone(),
                        found: view.shape().to_vec(),
                    });
                }
                Ok(bytemuck::pod_collect_to_vec(view.data()))
            })
            .collect()
    };
    Ok((read("m")?, read("v")?))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A fresh `<dir>.tmp/` to write a checkpoint into; [`commit_checkpoint`] swaps it in.
pub fn begin_checkpoint(dir: &Path) -> Result<PathBuf> {
    let tmp = sibling(dir, "tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    Ok(tmp)
}

/// Write `state` into `tmp` (from [`begin_checkpoint`]) and swap `tmp` in as `dir` by two
/// renames, so a crash at any moment leaves a complete checkpoint (see the module comment).
pub fn commit_checkpoint(tmp: &Path, dir: &Path, state: &TrainerState) -> Result<()> {
    let json = serde_json::to_string_pretty(state).expect("state serializes");
    write_atomic(&tmp.join("trainer.json"), json.as_bytes())?;
    sync_dir(tmp);
    let old = sibling(dir, "old");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| io_err(dir, e))?;
    }
    std::fs::rename(tmp, dir).map_err(|e| io_err(tmp, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent);
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
    }
    Ok(())
}

/// Write a checkpoint into `dir` (see the module comment): the model as a Hugging Face
/// directory, the tokenizer, and with `full` the optimizer state; always `trainer.json`.
pub async fn save_checkpoint(
    ctx: &GpuContext,
    trainer: &Trainer,
    tok: &Tokenizer,
    state: &TrainerState,
    dir: &Path,
    full: bool,
) -> Result<()> {
    let tmp = begin_checkpoint(dir)?;
    trainer.model.save(ctx, &tmp).await?;
    crate::train::tokenize::save(tok, &tmp.join("tokenizer.json"))?;
    if full {
        let m = trainer.m.read_all(ctx).await?;
        let v = trainer.v.read_all(ctx).await?;
        let bytes = optimizer_bytes(&gpt2_shapes(&trainer.model.config), &m, &v, state.step)?;
        write_atomic(&tmp.join("optimizer.safetensors"), &bytes)?;
    }
    let state = TrainerState {
        loss_scale: trainer.loss_scale(ctx).await?,
        ..state.clone()
    };
    commit_checkpoint(&tmp, dir, &state)
}

/// Restore weights, AdamW moments and the step from the checkpoint in `dir` into
/// `trainer`, whose model must have the checkpoint's config. Returns its trainer state.
pub fn restore_checkpoint(
    ctx: &GpuContext,
    trainer: &mut Trainer,
    dir: &Path,
) -> Result<TrainerState> {
    let cfg = trainer.model.config.clone();
    let saved = Gpt2Config::from_file(&dir.join("config.json"))?;
    if saved != cfg {
        return Err(Error::Invalid(format!(
            "{}: the checkpoint's model ({} layers, {} heads, {} channels, context {}, {} \
             tokens) differs from the run's ({} layers, {} heads, {} channels, context {}, {} \
             tokens)",
            dir.display(),
            saved.n_layer,
            saved.n_head,
            saved.n_embd,
            saved.n_positions,
            saved.vocab_size,
            cfg.n_layer,
            cfg.n_head,
            cfg.n_embd,
            cfg.n_positions,
            cfg.vocab_size
        )));
    }
    let state = TrainerState::read(&dir.join("trainer.json"))?;
    let values = load_gpt2_safetensors(&dir.join("model.safetensors"), &cfg)?;
    let (m, v) = read_optimizer(&dir.join("optimizer.safetensors"), &gpt2_shapes(&cfg))?;
    trainer.model.params.write_all(ctx, &values)?;
    trainer.model.refresh_half(ctx)?;
    trainer.m.write_all(ctx, &m)?;
    trainer.v.write_all(ctx, &v)?;
    trainer.step = u32::try_from(state.step).map_err(|_| {
        Error::Invalid(format!(
            "{}: step {} exceeds the 2^32 steps AdamW counts",
            dir.display(),
            state.step
        ))
    })?;
    if let Some(st) = &state.loss_scale {
        if st.skipped > trainer.step {
            return Err(Error::Invalid(format!(
                "{}: loss_scale.skipped {} exceeds the {} steps taken",
                dir.display(),
                st.skipped,
                trainer.step
            )));
        }
        trainer.set_loss_scale(ctx, st)?;
    }
    Ok(state)
}
