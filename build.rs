//! Build script.
//!
//! 1. Always: compiles the host emulator (`kernels/emu/`) and every kernel file (`kernels/*.cu`,
//!    `kernels/testing/*.cu`) as C++ with the emulation header force-included, at -O2 even in
//!    the debug profile, into static libraries. No CUDA toolkit is needed.
//! 2. With feature `cuda`: compiles every kernel file to PTX with nvcc into `OUT_DIR` and writes
//!    `OUT_DIR/ptx.rs` (one `include_str!` constant per file). Without nvcc this fails with a
//!    message naming `NVCC`, `CUDA_HOME` and `scripts/install-cuda-toolkit.sh`. A file named
//!    `*_sm90a.cu` uses Hopper-only instructions (wgmma) and is always compiled for the
//!    architecture-specific target compute_90a, whatever `CUDA_COMPUTE_CAP` says; the CUDA
//!    executor loads it on compute capability 9.0 devices only.
//!
//! Environment read (each tracked with rerun-if-env-changed):
//!   NVCC, CUDA_HOME, CUDA_PATH, PATH   where nvcc is (in that order)
//!   CUDA_COMPUTE_CAP                   PTX architecture, e.g. 80 or 90 (default 80)
//!   FUSED_MOE_EMU_SANITIZE=address     build the emulated kernels with AddressSanitizer
//!   FUSED_MOE_WERROR=1                 treat warnings in kernel files as errors (CI)

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_COMPUTE_CAP: &str = "80";

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernels = PathBuf::from("kernels");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "PATH",
        "CUDA_COMPUTE_CAP",
        "FUSED_MOE_EMU_SANITIZE",
        "FUSED_MOE_WERROR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let sources = kernel_sources(&kernels);
    // PTX first: a missing nvcc should fail the build at once, not after the emulator's
    // C++ has compiled.
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        if let Err(msg) = build_ptx(&sources, &out_dir) {
            eprintln!("\n{msg}\n");
            std::process::exit(1);
        }
    }
    build_emulator(&kernels, &sources, &out_dir);
}

/// Every `.cu` file under kernels/ and kernels/testing/, sorted for reproducible output.
fn kernel_sources(kernels: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [kernels.to_path_buf(), kernels.join("testing")] {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for entry in rd.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "cu") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn werror() -> bool {
    env::var("FUSED_MOE_WERROR").is_ok_and(|v| v == "1")
}

// ------------------------------------------------------------------------------------------
// Host emulator
// ------------------------------------------------------------------------------------------

fn build_emulator(kernels: &Path, sources: &[PathBuf], out_dir: &Path) {
    let sanitize = env::var("FUSED_MOE_EMU_SANITIZE")
        .ok()
        .filter(|s| !s.is_empty());
    let mut flags: Vec<String> = vec!["-O2".into(), "-std=c++17".into()];
    if let Some(s) = &sanitize {
        flags.push(format!("-fsanitize={s}"));
        flags.push("-fno-omit-frame-pointer".into());
        flags.push("-g".into());
    }
    println!("cargo:rustc-env=FUSED_MOE_EMU_FLAGS={}", flags.join(" "));

    let base = |b: &mut cc::Build| {
        b.cpp(true)
            .opt_level(2)
            .debug(sanitize.is_some())
            .warnings(true)
            .extra_warnings(true)
            .warnings_into_errors(werror())
            .flag("-std=c++17")
            // Probe every page of a large stack frame, so a fiber stack overflow always hits
            // the guard page (and gets the runtime's message) instead of jumping past it.
            .flag_if_supported("-fstack-clash-protection")
            .include(kernels);
        if let Some(s) = &sanitize {
            b.flag(format!("-fsanitize={s}"))
                .flag("-fno-omit-frame-pointer");
        }
    };

    // The runtime (fibers, barriers, warp collectives, launch loop).
    let mut rt = cc::Build::new();
    base(&mut rt);
    let emu = kernels.join("emu");
    if let Ok(rd) = fs::read_dir(&emu) {
        let mut cpp: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "cpp" || e == "S"))
            .collect();
        cpp.sort();
        rt.files(cpp);
    }
    // Definitions of every `extern __shared__` array (one per name, sized for the largest
    // dynamic shared memory the emulator accepts), emitted here because C++ needs one.
    let smem = out_dir.join("emu_extern_shared.cpp");
    fs::write(&smem, extern_shared_definitions(sources)).expect("write emu_extern_shared.cpp");
    rt.file(&smem);
    rt.compile("fused_moe_emu_runtime");

    // The kernel files, unchanged, compiled as C++ with the emulation header.
    let mut k = cc::Build::new();
    base(&mut k);
    k.flag("-x")
        .flag("c++")
        .flag("-include")
        .flag(emu.join("cuda_emu.h").to_str().expect("utf-8 path"));
    k.files(sources);
    k.compile("fused_moe_emu_kernels");

    if let Some(s) = &sanitize {
        // The Rust binary is not instrumented; link the sanitizer runtime for the C++ parts.
        println!(
            "cargo:rustc-link-lib=dylib={}",
            if s == "address" { "asan" } else { s }
        );
    }
    println!("cargo:rustc-link-lib=dylib=stdc++");
}

/// Scans the kernel files for `extern __shared__ ... NAME[]` and emits one thread_local
/// definition per distinct name (see kernels/emu/cuda_emu.h).
fn extern_shared_definitions(sources: &[PathBuf]) -> String {
    let mut names = std::collections::BTreeSet::new();
    for src in sources {
        let text = fs::read_to_string(src).unwrap_or_default();
        for line in text.lines() {
            let l = line.trim();
            if !(l.starts_with("extern") && l.contains("__shared__")) {
                continue;
            }
            if let Some(before) = l.split('[').next() {
                if let Some(name) = before
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .rfind(|s| !s.is_empty())
                {
                    names.insert(name.to_string());
                }
            }
        }
    }
    let mut s = String::from(
        "// Generated by build.rs: storage for every `extern __shared__` array of the kernels.\n\
         #include \"emu/cuda_emu.h\"\n",
    );
    for n in &names {
        s.push_str(&format!(
            "alignas(128) thread_local unsigned char {n}[FMOE_EMU_MAX_DYNAMIC_SMEM];\n"
        ));
    }
    // Called by the runtime at every block start: unwritten dynamic shared memory reads as
    // 0xff bytes (NaN in f32 and bf16), as uninitialised shared memory would on a GPU.
    s.push_str("void fmoe_emu_poison_dynamic_smem(unsigned bytes) {\n");
    for n in &names {
        s.push_str(&format!("    memset({n}, 0xff, bytes);\n"));
    }
    s.push_str("    (void)bytes;\n}\n");
    s
}

// ------------------------------------------------------------------------------------------
// PTX with nvcc (feature `cuda`)
// ------------------------------------------------------------------------------------------

/// Where nvcc is: `$NVCC`, then `$CUDA_HOME/bin/nvcc`, `$CUDA_PATH/bin/nvcc`, then `PATH`.
/// On failure, the list of places looked at (for the error message).
fn find_nvcc() -> Result<PathBuf, Vec<String>> {
    let mut looked = Vec::new();
    if let Some(p) = env::var_os("NVCC") {
        // An explicit choice is taken as given; running it reports a wrong path clearly.
        return Ok(PathBuf::from(p));
    }
    looked.push("$NVCC (unset)".to_string());
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        match env::var_os(var) {
            Some(home) => {
                let p = PathBuf::from(home).join("bin").join("nvcc");
                if p.is_file() {
                    return Ok(p);
                }
                looked.push(format!("${var}/bin/nvcc = {} (not found)", p.display()));
            }
            None => looked.push(format!("${var} (unset)")),
        }
    }
    if let Some(path) = env::var_os("PATH") {
        if let Some(p) = env::split_paths(&path)
            .map(|d| d.join("nvcc"))
            .find(|p| p.is_file())
        {
            return Ok(p);
        }
    }
    looked.push("every directory of $PATH".to_string());
    Err(looked)
}

/// The PTX target from `CUDA_COMPUTE_CAP` (`80`, `90`, `90a`, also `sm_90`/`compute_90`).
fn compute_cap() -> Result<String, String> {
    let raw = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| DEFAULT_COMPUTE_CAP.to_string());
    let cap = raw
        .trim()
        .trim_start_matches("sm_")
        .trim_start_matches("compute_");
    let digits = cap.trim_end_matches('a');
    if digits.len() < 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "error: CUDA_COMPUTE_CAP must look like 80, 90 or 90a, got `{raw}`"
        ));
    }
    Ok(cap.to_string())
}

/// The PTX architecture of kernel file `stem`: `90a` for the Hopper-only `*_sm90a` files, else
/// `cap` (from `CUDA_COMPUTE_CAP`). scripts/ptxas-check.sh and sass-check.sh follow the same rule.
fn file_arch<'a>(stem: &str, cap: &'a str) -> &'a str {
    if stem.ends_with("_sm90a") {
        "90a"
    } else {
        cap
    }
}

/// Compiles every kernel file to `OUT_DIR/<stem>.ptx` (nvcc processes run in parallel) and
/// writes `OUT_DIR/ptx.rs`: one `include_str!` constant per file plus `ALL`, the table of
/// (module name, PTX) the CUDA executor loads from. Also records the nvcc release and the PTX
/// architecture for `fused_moe::build_info`.
fn build_ptx(sources: &[PathBuf], out_dir: &Path) -> Result<(), String> {
    let nvcc = find_nvcc().map_err(|looked| {
        format!(
            "error: feature `cuda` needs nvcc (the CUDA compiler), and none was found.\n\
             Looked at: {}.\n\
             Install the pinned CUDA 13.0 compiler without root (no GPU needed), then point\n\
             CUDA_HOME (or NVCC) at it:\n\
             \x20   scripts/install-cuda-toolkit.sh\n\
             \x20   export CUDA_HOME=\"$(scripts/install-cuda-toolkit.sh --print-home)\"\n\
             or build without `--features cuda` (the CPU reference and the emulator need no toolkit).",
            looked.join(", ")
        )
    })?;
    let cap = compute_cap()?;
    let version = Command::new(&nvcc).arg("--version").output().map_err(|e| {
        format!(
            "error: could not run nvcc at {} (from NVCC/CUDA_HOME/PATH): {e}",
            nvcc.display()
        )
    })?;
    let version = String::from_utf8_lossy(&version.stdout);
    let release = version
        .lines()
        .find(|l| l.contains("release"))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    println!("cargo:rustc-env=FUSED_MOE_NVCC_VERSION={release}");
    println!("cargo:rustc-env=FUSED_MOE_PTX_ARCH=compute_{cap}");

    // One nvcc per file, all started before any is awaited (a handful of files; each nvcc is
    // single-threaded and small).
    let mut jobs = Vec::new();
    for src in sources {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("error: kernel file name is not UTF-8: {}", src.display()))?
            .to_string();
        let ptx = out_dir.join(format!("{stem}.ptx"));
        let mut cmd = Command::new(&nvcc);
        cmd.arg("--ptx")
            .arg(format!("-arch=compute_{}", file_arch(&stem, &cap)))
            .arg("-O3")
            .arg("-std=c++17")
            .arg("-lineinfo")
            .arg("-Ikernels")
            .arg("-o")
            .arg(&ptx)
            .arg(src);
        if werror() {
            cmd.arg("--Werror").arg("all-warnings");
        }
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("error: could not run {}: {e}", nvcc.display()))?;
        jobs.push((src, stem, cmd, child));
    }

    let mut consts = String::from("// Generated by build.rs: the PTX of every kernel file.\n");
    let mut table = String::from(
        "/// (module name, PTX) of every kernel file, sorted by path.\npub const ALL: &[(&str, &str)] = &[\n",
    );
    let mut seen = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for (src, stem, cmd, child) in jobs {
        let out = child
            .wait_with_output()
            .map_err(|e| format!("error: waiting for nvcc on {}: {e}", src.display()))?;
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            failures.push(format!(
                "error: nvcc failed on {}\ncommand: {cmd:?}\n{log}",
                src.display()
            ));
            continue;
        }
        // Warnings (not errors without FUSED_MOE_WERROR=1) must still be seen.
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            println!("cargo:warning=nvcc {}: {line}", src.display());
        }
        if !seen.insert(stem.clone()) {
            return Err(format!(
                "error: two kernel files are named {stem}.cu; PTX module names must be unique"
            ));
        }
        let name = stem.to_uppercase();
        consts.push_str(&format!(
            "/// PTX of `{}`.\npub const {name}: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/{stem}.ptx\"));\n",
            src.display()
        ));
        table.push_str(&format!("    (\"{stem}\", {name}),\n"));
    }
    if !failures.is_empty() {
        return Err(failures.join("\n"));
    }
    table.push_str("];\n");
    consts.push_str(&table);
    fs::write(out_dir.join("ptx.rs"), consts).map_err(|e| format!("error: write ptx.rs: {e}"))?;
    Ok(())
}
