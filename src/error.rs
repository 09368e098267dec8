//! The crate's error type. Every variant names what was wrong, what was expected and what was
//! found, so a caller can act on it without reading the source.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `fused-moe`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent (reported before any launch).
    #[error("invalid configuration: `{field}` must be {expected}, got {actual}")]
    InvalidConfig {
        field: &'static str,
        expected: String,
        actual: String,
    },

    /// An argument of a public entry point has the wrong shape, length, dtype or alignment.
    #[error("invalid argument `{name}`: expected {expected}, got {actual}")]
    InvalidArgument {
        name: &'static str,
        expected: String,
        actual: String,
    },

    /// A checkpoint file is missing, unreadable or inconsistent.
    #[error("checkpoint {}: {}{message}", file.display(), tensor.as_deref().map(|t| format!("tensor `{t}`: ")).unwrap_or_default())]
    Checkpoint {
        file: PathBuf,
        tensor: Option<String>,
        message: String,
    },

    /// An input/output file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The host emulator reported a failure (deadlock, strict-mode violation, bad launch).
    #[error("emulated kernel `{kernel}`: {message}")]
    Emulator { kernel: String, message: String },

    /// The CUDA driver, the GPU or the embedded PTX is unusable.
    #[error("CUDA: {0}")]
    Cuda(String),

    /// This build lacks a capability (for example the `cuda` feature).
    #[error("{0}")]
    Unsupported(String),

    /// The GPU cannot run the PTX this crate was built for (its compute capability is below
    /// the PTX target, or differs from an arch-specific `XXa` target).
    #[error(
        "GPU `{device}` has compute capability {found}, but the kernels' PTX ({ptx_arch}) needs \
         compute capability {required}; use such a GPU or rebuild with a CUDA_COMPUTE_CAP the \
         GPU supports"
    )]
    DeviceTooOld {
        device: String,
        found: String,
        required: String,
        ptx_arch: String,
    },

    /// The driver cannot load PTX made by the nvcc used at build time
    /// (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`).
    #[error(
        "the CUDA driver (supports CUDA {driver}) is older than the nvcc that built the kernels \
         ({nvcc}), so it cannot load their PTX (CUDA_ERROR_UNSUPPORTED_PTX_VERSION); update the \
         driver, or rebuild with a toolkit no newer than the driver (scripts/install-cuda-toolkit.sh \
         pins CUDA 13.0)"
    )]
    DriverTooOld { driver: String, nvcc: String },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn arg(name: &'static str, expected: impl ToString, actual: impl ToString) -> Self {
        Error::InvalidArgument {
            name,
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }

    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(field: &'static str, expected: impl ToString, actual: impl ToString) -> Self {
        Error::InvalidConfig {
            field,
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }

    /// Shorthand for [`Error::Checkpoint`].
    pub fn checkpoint(
        file: impl Into<PathBuf>,
        tensor: Option<&str>,
        message: impl ToString,
    ) -> Self {
        Error::Checkpoint {
            file: file.into(),
            tensor: tensor.map(str::to_owned),
            message: message.to_string(),
        }
    }
}

/// Checks that a slice argument has exactly `expected` elements.
pub(crate) fn check_len(name: &'static str, len: usize, expected: usize, what: &str) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(Error::arg(
            name,
            format!("{expected} elements ({what})"),
            format!("{len} elements"),
        ))
    }
}

/// Checks that a destination of `wanted` elements fits in a source of `available` elements.
pub(crate) fn check_len_at_least(
    name: &'static str,
    available: usize,
    wanted: usize,
) -> Result<()> {
    if wanted <= available {
        Ok(())
    } else {
        Err(Error::arg(
            name,
            format!("at most {available} elements (the source's length)"),
            format!("{wanted} elements"),
        ))
    }
}

/// The row count of a row-major `[rows, width]` argument of `len` elements; an error naming
/// the argument when `len` is not a whole number of rows. `width_desc` says what the width is
/// (e.g. "hidden = 2880") and `shape` the tensor's shape (e.g. "[T, H]").
pub(crate) fn row_count(
    name: &'static str,
    len: usize,
    width: usize,
    width_desc: &str,
    shape: &str,
) -> Result<usize> {
    if len % width != 0 {
        return Err(Error::arg(
            name,
            format!("a multiple of {width_desc} elements ({shape})"),
            len,
        ));
    }
    Ok(len / width)
}
