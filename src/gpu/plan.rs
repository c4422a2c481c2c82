//! Buffer planning: activation and scratch tensors are allocated once per key (a model
//! config, batch size and sequence length) and reused by every step with that key. A
//! [`TensorSet`] is the allocation; [`BufferPlanner`] hands out the same set for the same
//! key and counts real allocations so tests can prove reuse.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::tensor::{DType, Tensor};
use crate::gpu::GpuContext;

/// One tensor a plan needs.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl TensorSpec {
    pub fn f32(name: &str, shape: &[usize]) -> Self {
        TensorSpec {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype: DType::F32,
        }
    }
}

/// Named tensors allocated together.
pub struct TensorSet {
    tensors: BTreeMap<String, Tensor>,
}

impl TensorSet {
    pub fn allocate(ctx: &GpuContext, specs: &[TensorSpec]) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for s in specs {
            let t = Tensor::zeros(ctx, &s.name, &s.shape, s.dtype)?;
            if tensors.insert(s.name.clone(), t).is_some() {
                return Err(Error::Invalid(format!("tensor {} planned twice", s.name)));
            }
        }
        Ok(TensorSet { tensors })
    }

    /// The tensor called `name`; a missing name is a bug in the plan's caller.
    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name:?} in this plan"))
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors.values().map(|t| t.size_bytes()).sum()
    }

    /// The largest single tensor: (name, bytes).
    pub fn largest(&self) -> Option<(&str, u64)> {
        self.tensors
            .iter()
            .map(|(k, t)| (k.as_str(), t.size_bytes()))
            .max_by_key(|(_, b)| *b)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// Caches one [`TensorSet`] per key.
pub struct BufferPlanner<K> {
    sets: HashMap<K, Arc<TensorSet>>,
    allocations: usize,
}

impl<K: Hash + Eq> Default for BufferPlanner<K> {
    fn default() -> Self {
        BufferPlanner {
            sets: HashMap::new(),
            allocations: 0,
        }
    }
}

impl<K: Hash + Eq> BufferPlanner<K> {
    /// The set for `key`, allocated from `specs()` the first time the key is seen.
    pub fn get_or_allocate(
        &mut self,
        ctx: &GpuContext,
        key: K,
        specs: impl FnOnce() -> Vec<TensorSpec>,
    ) -> Result<Arc<TensorSet>> {
        if let Some(s) = self.sets.get(&key) {
            return Ok(s.clone());
        }
        let set = Arc::new(TensorSet::allocate(ctx, &specs())?);
        self.allocations += 1;
        self.sets.insert(key, set.clone());
        Ok(set)
    }

    /// How many sets were really allocated.
    pub fn allocations(&self) -> usize {
        self.allocations
    }

    /// Drop the set for `key` (when a shape will not be seen again).
    pub fn release(&mut self, key: &K) {
        self.sets.remove(key);
    }
}
