//! Finding and reading tensors in the `*.safetensors` files of one checkpoint folder.
//!
//! Only headers are parsed up front; a tensor's bytes are read (seek + read) when it is asked
//! for, so loading one layer of a 13 GB shard reads that layer's tensors and nothing else.
//! Every error names the file and, where one is involved, the tensor.

use crate::error::{Error, Result};
use safetensors::tensor::Metadata;
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The index of a sharded checkpoint (HF convention).
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// safetensors refuses headers above 100 MB; so do we (a corrupt length is usually huge).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Which file holds each tensor of a checkpoint folder.
#[derive(Debug)]
pub(crate) struct TensorStore {
    /// The index file, when the checkpoint has one.
    index: Option<PathBuf>,
    /// The safetensors files, when there is no index (all of the folder's `*.safetensors`).
    files: Vec<PathBuf>,
    /// Tensor name → file.
    map: BTreeMap<String, PathBuf>,
}

impl TensorStore {
    /// Maps the tensors of `root`: from `model.safetensors.index.json` when present (shard
    /// headers are then read only when a tensor of theirs is needed), else from the headers of
    /// every `*.safetensors` file in `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let index = root.join(INDEX_FILE);
        if index.is_file() {
            let map = read_index(&index, root)?;
            return Ok(TensorStore {
                index: Some(index),
                files: Vec::new(),
                map,
            });
        }
        let files = safetensors_files(root)?;
        if files.is_empty() {
            return Err(Error::checkpoint(
                root,
                None,
                format!("no `*.safetensors` file and no `{INDEX_FILE}` in this folder"),
            ));
        }
        let mut map: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in &files {
            let header = FileHeader::read(file, None)?;
            for name in header.meta.offset_keys() {
                if let Some(other) = map.get(&name) {
                    return Err(Error::checkpoint(
                        file,
                        Some(&name),
                        format!("tensor also present in {}", other.display()),
                    ));
                }
                map.insert(name, file.clone());
            }
        }
        Ok(TensorStore {
            index: None,
            files,
            map,
        })
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The file to name when a tensor is missing: the index, the only file, or the folder.
    pub fn catalogue(&self) -> PathBuf {
        match (&self.index, self.files.as_slice()) {
            (Some(index), _) => index.clone(),
            (None, [only]) => only.clone(),
            (None, files) => files
                .first()
                .and_then(|f| f.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    /// The header entry of `name`, read through `cache` (one header parse per file).
    pub fn get(&self, cache: &mut HeaderCache, name: &str) -> Result<TensorRef> {
        let file = self
            .map
            .get(name)
            .ok_or_else(|| Error::checkpoint(self.catalogue(), Some(name), "missing tensor"))?;
        if !cache.headers.contains_key(file) {
            let header = FileHeader::read(file, Some(name))?;
            cache.headers.insert(file.clone(), header);
        }
        let header = &cache.headers[file];
        let info = header.meta.info(name).ok_or_else(|| {
            Error::checkpoint(
                file,
                Some(name),
                format!(
                    "missing tensor: `{INDEX_FILE}` maps it to this file, which does not hold it"
                ),
            )
        })?;
        Ok(TensorRef {
            file: file.clone(),
            name: name.to_owned(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            offset: header.data_start + info.data_offsets.0 as u64,
            len: info.data_offsets.1 - info.data_offsets.0,
        })
    }
}

/// Parsed safetensors headers, by file.
#[derive(Default)]
pub(crate) struct HeaderCache {
    headers: HashMap<PathBuf, FileHeader>,
}

/// A safetensors file's header, checked against the file's size.
#[derive(Debug)]
struct FileHeader {
    /// Byte offset of the data section (8 + header length).
    data_start: u64,
    meta: Metadata,
}

impl FileHeader {
    /// Reads and checks the header of `path`. `tensor` is the tensor that led here (for errors).
    fn read(path: &Path, tensor: Option<&str>) -> Result<Self> {
        let err = |msg: String| Error::checkpoint(path, tensor, msg);
        let mut f = open(path, tensor)?;
        let file_len = f
            .metadata()
            .map_err(|e| err(format!("cannot stat: {e}")))?
            .len();
        let mut len_bytes = [0u8; 8];
        f.read_exact(&mut len_bytes).map_err(|_| {
            err(format!(
                "truncated or corrupt safetensors file: {file_len} bytes, shorter than the 8-byte header length"
            ))
        })?;
        let n = u64::from_le_bytes(len_bytes);
        if n > MAX_HEADER_BYTES || 8 + n > file_len {
            return Err(err(format!(
                "truncated or corrupt safetensors file: header length {n} does not fit the file ({file_len} bytes)"
            )));
        }
        let mut header = vec![0u8; n as usize];
        f.read_exact(&mut header)
            .map_err(|e| err(format!("cannot read the header: {e}")))?;
        let meta: Metadata = serde_json::from_slice(&header)
            .map_err(|e| err(format!("corrupt safetensors header: {e}")))?;
        let data_start = 8 + n;
        let want = data_start + meta.data_len() as u64;
        if want > file_len {
            // Name the first tensor whose data the file lacks (offsets are contiguous, in order).
            let cut = meta.offset_keys().into_iter().find(|name| {
                meta.info(name)
                    .is_some_and(|i| data_start + i.data_offsets.1 as u64 > file_len)
            });
            return Err(Error::checkpoint(
                path,
                cut.as_deref().or(tensor),
                format!(
                    "truncated safetensors file: its header describes {want} bytes, the file has {file_len}"
                ),
            ));
        }
        if want < file_len {
            return Err(err(format!(
                "corrupt safetensors file: {} bytes past the end of the data its header describes",
                file_len - want
            )));
        }
        Ok(FileHeader { data_start, meta })
    }
}

/// Where one tensor lies, with its dtype and shape (from the header).
#[derive(Debug, Clone)]
pub(crate) struct TensorRef {
    pub file: PathBuf,
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    offset: u64,
    len: usize,
}

impl TensorRef {
    /// An error about this tensor, naming its file.
    pub fn error(&self, msg: impl ToString) -> Error {
        Error::checkpoint(&self.file, Some(&self.name), msg)
    }

    /// Checks the dtype is one of `dtypes` and the shape is exactly `shape`.
    pub fn expect(&self, dtypes: &[Dtype], shape: &[usize]) -> Result<()> {
        if !dtypes.contains(&self.dtype) {
            let names: Vec<String> = dtypes.iter().map(|d| d.to_string()).collect();
            return Err(self.error(format!(
                "wrong dtype: expected {}, got {}",
                names.join(" or "),
                self.dtype
            )));
        }
        if self.shape != shape {
            return Err(self.error(format!(
                "wrong shape: expected {shape:?}, got {:?}",
                self.shape
            )));
        }
        Ok(())
    }

    /// The raw little-endian bytes.
    pub fn read(&self) -> Result<Vec<u8>> {
        let mut f = open(&self.file, Some(&self.name))?;
        let mut bytes = vec![0u8; self.len];
        f.seek(SeekFrom::Start(self.offset))
            .and_then(|_| f.read_exact(&mut bytes))
            .map_err(|e| self.error(format!("cannot read the tensor data: {e}")))?;
        Ok(bytes)
    }
}

fn open(path: &Path, tensor: Option<&str>) -> Result<File> {
    File::open(path).map_err(|e| {
        let msg = if e.kind() == std::io::ErrorKind::NotFound {
            "missing file".to_owned()
        } else {
            format!("cannot open: {e}")
        };
        Error::checkpoint(path, tensor, msg)
    })
}

/// `weight_map` of an index file, with file names resolved against `root`.
fn read_index(index: &Path, root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let err = |msg: String| Error::checkpoint(index, None, msg);
    let text = std::fs::read_to_string(index).map_err(|e| err(format!("cannot read: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| err("no `weight_map` object".to_owned()))?;
    map.iter()
        .map(|(name, file)| {
            let file = file.as_str().ok_or_else(|| {
                Error::checkpoint(
                    index,
                    Some(name),
                    format!("file name must be a string, got {file}"),
                )
            })?;
            Ok((name.clone(), root.join(file)))
        })
        .collect()
}

/// The `*.safetensors` files directly in `root`, sorted by name.
fn safetensors_files(root: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(root)
        .map_err(|e| Error::checkpoint(root, None, format!("cannot list the folder: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| Error::checkpoint(root, None, format!("cannot list the folder: {e}")))?
            .path();
        if path.is_file() && path.extension().is_some_and(|x| x == "safetensors") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// bf16 values from little-endian bytes.
pub(crate) fn bf16_from_le(bytes: &[u8]) -> Vec<half::bf16> {
    bytes
        .chunks_exact(2)
        .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
        .collect()
}

/// A tensor of dtype BF16, F16 or F32 as f32 values (exact widening).
pub(crate) fn f32_from_le(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        _ => bf16_from_le(bytes).iter().map(|v| v.to_f32()).collect(),
    }
}
