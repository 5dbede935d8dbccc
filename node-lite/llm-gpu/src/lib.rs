//! Shoal's chat engine on the GPU: the GGUF chat models [`shoal_llm`] runs on the CPU
//! (Llama family, Qwen2), here on burn — `wgpu` natively (Vulkan/Metal/DX12), WebGPU in the
//! browser.
//!
//! - [`GpuDevice`]: the adapter, found asynchronously (the browser has no other way), with the
//!   limits the loader checks against.
//! - [`GpuModel`]: every matrix dequantized once on the host and uploaded (f32, or f16 where
//!   the device has it and the caller asks); the forward pass of `shoal_llm::model` (RMSNorm,
//!   adjacent-pair or rotate-half RoPE, grouped-query attention, SwiGLU, f16-rounded cache
//!   values); the KV cache in a [`GpuSession`] on the device, in fixed-size buckets with a mask
//!   so decode steps repeat their shapes (WebGPU compiles a shader per new shape).
//! - [`GpuChat`]: tokenizer and chat template from the same GGUF, and an async generation loop
//!   ([`GpuGenerator::step`]) returning the CPU engine's [`shoal_llm::Generation`]. Greedy
//!   decoding reads back one token id per step; nothing reads synchronously.

#![warn(missing_docs)]
mod chat;
mod model;

pub use burn::tensor::Device;
pub use chat::{GpuChat, GpuGenerator};
pub use model::{GpuModel, GpuSession, LoadOptions, Precision};

use shoal_llm::LlmError;

/// Everything that can go wrong on the GPU path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// The model, tokenizer, template or input, as the CPU engine reports them.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// No GPU adapter at all (no driver; in a browser, no WebGPU).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// An adapter exists but refused to give a device, or the runtime could not start.
    #[error("GPU device: {0}")]
    Device(String),
    /// The device cannot hold this model as loaded (a tensor over its buffer limit, f16 asked
    /// of a device without it).
    #[error("this GPU cannot run the model: {0}")]
    Unsupported(String),
    /// Reading results back from the device failed.
    #[error("reading from the GPU: {0}")]
    Readback(String),
    /// The prompt (plus what was asked for) does not fit the context.
    #[error("the prompt needs {needed} tokens; this model's context holds {limit}")]
    ContextFull {
        /// Tokens needed.
        needed: usize,
        /// The model's context length.
        limit: usize,
    },
    /// Bad arguments (empty input, token id out of range, sampling ranges).
    #[error("invalid input: {0}")]
    Input(String),
}

/// WebGPU's default `maxStorageBufferBindingSize` (128 MiB): what a device of unknown limits
/// is assumed to allow per tensor.
pub const DEFAULT_MAX_BINDING: u64 = 128 << 20;

/// A burn wgpu device and what the loader needs to know about it.
#[derive(Debug, Clone)]
pub struct GpuDevice {
    /// The burn device tensors live on.
    pub device: Device,
    /// Adapter name and graphics API, e.g. `"llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)"`.
    pub adapter: String,
    /// The largest buffer one tensor may occupy (bytes).
    pub max_binding: u64,
    /// Whether the device computes in f16 (needed for [`Precision::F16`] and the f16-rounded
    /// KV cache).
    pub f16: bool,
}

impl GpuDevice {
    /// Find the default adapter (a high-performance GPU first) and start burn's wgpu runtime
    /// on it. Asynchronous everywhere (a browser cannot block); natively, drive it with any
    /// executor. burn starts one runtime per adapter and process: call this once and clone
    /// the result.
    pub async fn init() -> Result<Self, GpuError> {
        use burn::tensor::wgpu::WgpuInitError;
        let (device, setup) = Device::wgpu_options()
            .init_with_setup_async()
            .await
            .map_err(|e| match e {
                WgpuInitError::AdapterUnavailable { .. } => GpuError::NoAdapter(e.to_string()),
                other => GpuError::Device(other.to_string()),
            })?;
        let info = setup.adapter.get_info();
        let limits = setup.device.limits();
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let f16 = device.supports_dtype(burn::tensor::DType::F16);
        Ok(GpuDevice {
            device,
            adapter: format!("{} ({:?})", info.name, info.backend),
            max_binding,
            f16,
        })
    }

    /// Wrap a device the caller already started (limits unknown: [`DEFAULT_MAX_BINDING`]).
    pub fn from_device(device: Device) -> Self {
        let f16 = device.supports_dtype(burn::tensor::DType::F16);
        GpuDevice {
            device,
            adapter: "unknown".into(),
            max_binding: DEFAULT_MAX_BINDING,
            f16,
        }
    }
}
