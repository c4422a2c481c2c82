//! Text generation from a [`Model`]: a [`Generator`] owns a one-row [`Decoder`] (the KV
//! cache and recorded passes, allocated once) and turns a prompt into a [`TokenStream`]:
//! the first `next` prefills the prompt in one pass, each later one is a decode step,
//! and every step yields the sampled id with the text it completes. The stream also
//! decides when to stop: after `max_tokens`, at the model's end-of-text id, or when the
//! text contains a stop string (text that could begin one is held back until it cannot).
//!
//! A request must fit the context: prompt + max_tokens ≤ the model's positions, or it is
//! refused with a message saying by how much (no sliding window). Everything here is
//! `async` and never blocks; the CLI drives it with `GpuContext::block_on`, the server
//! from a worker thread of its own.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::infer::decoder::Decoder;
use crate::infer::model::Model;
use crate::kernels::sampling::SampleSettings;

/// How to generate: the sampler's settings and when to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Tokens to generate at most (≥ 1).
    pub max_tokens: usize,
    /// 0 is greedy; otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the K most likely tokens (ties of the K-th too); 0 keeps all.
    pub top_k: usize,
    /// Keep the fewest most likely tokens whose probability reaches top_p; 1 keeps all.
    pub top_p: f32,
    /// The same seed, prompt and settings give the same tokens.
    pub seed: u64,
    /// Stop before the first of these strings in the generated text.
    pub stop: Vec<String>,
    /// Stop after the model's end-of-text token.
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 64,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            stop_at_eos: true,
        }
    }
}

impl GenerateOptions {
    /// Greedy decoding of `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        GenerateOptions {
            max_tokens,
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// The sampler's settings for the draw of token number `counter` (from 0).
    pub fn settings(&self, counter: u32) -> Result<SampleSettings> {
        let top_k = u32::try_from(self.top_k)
            .map_err(|_| Error::Invalid(format!("top_k {} is too large", self.top_k)))?;
        SampleSettings::new(self.temperature, top_k, self.top_p, self.seed, counter)
    }

    /// Error unless every option is in range; messages name the option.
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 {
            return Err(Error::Invalid("max_tokens must be at least 1".into()));
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(Error::Invalid("a stop string must not be empty".into()));
        }
        self.settings(0).map(|_| ())
    }
}

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// max_tokens were generated.
    Length,
    /// The end-of-text token or a stop string.
    Stop,
}

impl FinishReason {
    /// As the OpenAI API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Stop => "stop",
        }
    }
}

/// One generated token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub id: u32,
    /// Text released with this token: what it completes, less anything held back (a
    /// partial UTF-8 character, or text that may begin a stop string), plus whatever was
    /// held before it and is now safe. Empty for models without a tokenizer.
    pub text: String,
}

/// Timings of one stream (wall clock, device work included).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    /// The prefill: prompt in, first token out.
    pub prefill_secs: f64,
    /// Tokens produced by decode steps (all but the first).
    pub decode_tokens: usize,
    pub decode_secs: f64,
}

impl GenerateStats {
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }

    pub fn decode_tokens_per_sec(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_secs.max(1e-9)
    }
}

/// A whole generation, as [`Generator::generate`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub stats: GenerateStats,
}

/// Generates from one model, one request at a time, with a KV cache allocated once.
pub struct Generator {
    model: Arc<Model>,
    decoder: Decoder,
}

impl Generator {
    /// A generator over the model's whole context.
    pub fn new(model: Arc<Model>) -> Result<Self> {
        let ctx = model.context();
        Self::with_context(model, ctx)
    }

    /// A generator whose cache holds `context` positions (at most the model's).
    pub fn with_context(model: Arc<Model>, context: usize) -> Result<Self> {
        let decoder = Decoder::new(&model.ctx, &model.gpt2, 1, context)?;
        Ok(Generator { model, decoder })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Positions a prompt and its completion may fill together.
    pub fn context(&self) -> usize {
        self.decoder.context()
    }

    /// The decoder underneath (cache, recorded passes, last logits).
    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// Error unless a prompt of `prompt_len` tokens and `max_tokens` more fit the context.
    pub fn check_fits(&self, prompt_len: usize, max_tokens: usize) -> Result<()> {
        let ctx = self.context();
        if prompt_len == 0 {
            return Err(Error::Invalid(
                "the prompt is empty: give at least one token".into(),
            ));
        }
        if prompt_len + max_tokens > ctx {
            let room = if prompt_len >= ctx {
                "the prompt alone fills it".to_string()
            } else {
                format!(
                    "at most {} new tokens fit after this prompt",
                    ctx - prompt_len
                )
            };
            return Err(Error::Invalid(format!(
                "a prompt of {prompt_len} tokens plus max_tokens {max_tokens} is {} tokens, more \
                 than the model's context of {ctx} positions ({room}); shorten the prompt or \
                 lower max_tokens",
                prompt_len + max_tokens
            )));
        }
        Ok(())
    }

    /// Start generating from `prompt`: a stream of tokens, the first from the prefill.
    pub fn stream(&mut self, prompt: &[u32], opts: &GenerateOptions) -> Result<TokenStream<'_>> {
        opts.validate()?;
        self.check_fits(prompt.len(), opts.max_tokens)?;
        self.model.check_ids(prompt, "prompt")?;
        let text = TextState::new(&opts.stop);
        Ok(TokenStream {
            gen: self,
            opts: opts.clone(),
            prompt: prompt.iter().map(|&i| i as i32).collect(),
            ids: Vec::new(),
            text,
            finished: None,
            stats: GenerateStats {
                prompt_tokens: prompt.len(),
                ..Default::default()
            },
        })
    }

    /// Generate to the end and collect the ids, the text and the timings.
    pub async fn generate(&mut self, prompt: &[u32], opts: &GenerateOptions) -> Result<Completion> {
        let mut stream = self.stream(prompt, opts)?;
        let mut text = String::new();
        while let Some(tok) = stream.next().await? {
            text.push_str(&tok.text);
        }
        Ok(Completion {
            ids: stream.ids.clone(),
            text,
            finish_reason: stream.finished.unwrap_or(FinishReason::Length),
            stats: stream.stats.clone(),
        })
    }
}

/// The tokens of one generation, produced one `next` at a time.
pub struct TokenStream<'g> {
    gen: &'g mut Generator,
    opts: GenerateOptions,
    prompt: Vec<i32>,
    ids: Vec<u32>,
    text: TextState,
    finished: Option<FinishReason>,
    stats: GenerateStats,
}

#[cfg(not(target_arch = "wasm32"))]
fn now() -> Option<std::time::Instant> {
    Some(std::time::Instant::now())
}

#[cfg(target_arch = "wasm32")]
fn now() -> Option<std::time::Instant> {
    None
}

fn secs_since(t: Option<std::time::Instant>) -> f64 {
    t.map_or(0.0, |t| t.elapsed().as_secs_f64())
}

impl TokenStream<'_> {
    /// The next token, or `None` once the stream has finished. The first call runs the
    /// prefill; each later one a decode step (one submit, 4 bytes read back).
    pub async fn next(&mut self) -> Result<Option<Token>> {
        if self.finished.is_some() {
            return Ok(None);
        }
        let counter = self.ids.len() as u32;
        let settings = [self.opts.settings(counter)?];
        let start = now();
        let dec = &mut self.gen.decoder;
        let id = if let Some(&last) = self.ids.last() {
            let ids = dec
                .feed(&self.gen.model.ctx, &[&[last as i32]], &settings)
                .await?;
            self.stats.decode_secs += secs_since(start);
            self.stats.decode_tokens += 1;
            ids[0]
        } else {
            dec.reset(0);
            let ids = dec
                .feed(&self.gen.model.ctx, &[&self.prompt], &settings)
                .await?;
            self.stats.prefill_secs = secs_since(start);
            ids[0]
        };
        self.ids.push(id);
        let model = &self.gen.model;
        let eos = self.opts.stop_at_eos && model.eos == Some(id);
        let mut stopped = eos;
        let mut text = String::new();
        if let Some(tok) = &model.tokenizer {
            if !eos {
                self.text.push(tok, id)?;
            }
            let last = eos || self.ids.len() >= self.opts.max_tokens;
            let (out, hit) = self.text.release(tok, last)?;
            text = out;
            stopped |= hit;
        }
        if stopped {
            self.finished = Some(FinishReason::Stop);
        } else if self.ids.len() >= self.opts.max_tokens {
            self.finished = Some(FinishReason::Length);
        }
        Ok(Some(Token { id, text }))
    }

    /// Why the stream ended; `None` while it runs.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finished
    }

    /// Every id generated so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn stats(&self) -> &GenerateStats {
        &self.stats
    }
}

/// The generated text so far and how much of it has been released.
struct TextState {
    stops: Vec<String>,
    /// Ids not yet decoded: their text ends inside a UTF-8 character.
    pending: Vec<u32>,
    all: String,
    released: usize,
}

/// Ids a partial character may span before it is released as decoded (U+FFFD).
const MAX_PENDING: usize = 4;

impl TextState {
    fn new(stops: &[String]) -> Self {
        TextState {
            stops: stops.to_vec(),
            pending: Vec::new(),
            all: String::new(),
            released: 0,
        }
    }

    fn push(&mut self, tok: &tokenizers::Tokenizer, id: u32) -> Result<()> {
        self.pending.push(id);
        let s = crate::tokenizer::decode(tok, &self.pending)?;
        if !s.ends_with('\u{FFFD}') || self.pending.len() >= MAX_PENDING {
            self.all.push_str(&s);
            self.pending.clear();
        }
        Ok(())
    }

    /// Text safe to show now, and whether a stop string was found (the text ends
    /// before it). With `last`, everything left is released.
    fn release(&mut self, tok: &tokenizers::Tokenizer, last: bool) -> Result<(String, bool)> {
        if last && !self.pending.is_empty() {
            let s = crate::tokenizer::decode(tok, &self.pending)?;
            self.all.push_str(&s);
            self.pending.clear();
        }
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.all.find(s.as_str()))
            .min();
        let end = match hit {
            Some(p) => p.max(self.released),
            None if last => self.all.len(),
            None => self.all.len() - self.held_suffix(),
        };
        let out = self.all[self.released..end].to_string();
        self.released = end;
        Ok((out, hit.is_some()))
    }

    /// Length of the longest end of the text that begins some stop string.
    fn held_suffix(&self) -> usize {
        let mut held = 0;
        for s in &self.stops {
            for k in (1..s.len()).rev() {
                if k <= held {
                    break;
                }
                if s.is_char_boundary(k) && self.all.ends_with(&s[..k]) {
                    held = k;
                    break;
                }
            }
        }
        held.min(self.all.len() - self.released)
    }
}
