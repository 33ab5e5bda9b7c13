//! Data-parallel collectives for gnmt on libtorch's own distributed engine, c10d: the TCPStore
//! rendezvous and the Gloo and NCCL process groups that PyTorch's DistributedDataParallel uses,
//! reached through a small C++ shim (`cpp/shim.cpp`) since tch exposes none of it.
//!
//! [`Launch::from_env`] reads the variables `torchrun` (and Slurm wrappers, Kubernetes operators)
//! set; [`ProcessGroup::connect`] meets the other ranks; the collectives work in place on tch
//! tensors. Every failure of c10d (a rank that never arrives, a peer that died, a timeout) is a
//! [`DistError`] naming this rank and the reason, never an abort: the shim catches every C++
//! exception, and the store and the group both have timeouts.
//!
//! [`Backend::Gloo`] works on CPU tensors; [`Backend::Nccl`] on the rank's CUDA tensors, compiled
//! in only where the build found the CUDA headers (`scripts/setup.sh` installs them; see
//! [`nccl_built`]).

use std::ffi::{c_char, c_int, c_longlong, c_uchar, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tch::Tensor;

mod ffi;

/// What can go wrong meeting the other ranks or running a collective.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("environment variable {var}={value:?}: {msg}")]
    Env {
        var: &'static str,
        value: String,
        msg: String,
    },
    #[error("rank {rank} of {world}: could not meet the other ranks at {addr}:{port} within {secs} s: {reason}")]
    Rendezvous {
        rank: usize,
        world: usize,
        addr: String,
        port: u16,
        secs: u64,
        reason: String,
    },
    #[error("rank {rank} of {world}: {op} failed ({suspect}): {reason}")]
    Collective {
        rank: usize,
        world: usize,
        op: &'static str,
        suspect: String,
        reason: String,
    },
    #[error("{0}")]
    Usage(String),
}

/// Where this process sits in a data-parallel job, as `torchrun` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// The rank among the processes of this machine: the GPU it uses (`cuda:LOCAL_RANK`).
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already hosts the store (`TORCHELASTIC_USE_AGENT_STORE=True`): every
    /// rank is a client. Otherwise rank 0 hosts it.
    pub agent_store: bool,
}

impl Launch {
    /// The launch described by `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`
    /// and `TORCHELASTIC_USE_AGENT_STORE`; `None` when `WORLD_SIZE` is unset (a plain run).
    pub fn from_env() -> Result<Option<Launch>, DistError> {
        Launch::from_vars(|k| std::env::var(k).ok())
    }

    /// Rank `rank` of `world` processes on this machine, rank 0 hosting the store at
    /// 127.0.0.1:`port` (tests, and jobs that start their ranks themselves).
    pub fn local(rank: usize, world: usize, port: u16) -> Launch {
        Launch {
            rank,
            world_size: world,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
        }
    }

    /// [`Launch::from_env`] over any source of variables (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>, DistError> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let num = |name: &'static str, value: Option<String>, default: Option<usize>| match (
            value, default,
        ) {
            (None, Some(d)) => Ok(d),
            (None, None) => Err(DistError::Env {
                var: name,
                value: String::new(),
                msg: "must be set when WORLD_SIZE is".into(),
            }),
            (Some(v), _) => v.trim().parse::<usize>().map_err(|e| DistError::Env {
                var: name,
                value: v.clone(),
                msg: e.to_string(),
            }),
        };
        let world_size = num("WORLD_SIZE", Some(world), None)?;
        let rank = num("RANK", var("RANK"), None)?;
        let local_rank = num("LOCAL_RANK", var("LOCAL_RANK"), Some(0))?;
        let port = num("MASTER_PORT", var("MASTER_PORT"), Some(29500))?;
        let env_err = |v: &'static str, value: String, msg: &str| DistError::Env {
            var: v,
            value,
            msg: msg.into(),
        };
        if world_size == 0 {
            return Err(env_err("WORLD_SIZE", "0".into(), "must be at least 1"));
        }
        if rank >= world_size {
            let msg = format!("must be below WORLD_SIZE={world_size}");
            return Err(env_err("RANK", rank.to_string(), &msg));
        }
        let master_port = u16::try_from(port)
            .map_err(|_| env_err("MASTER_PORT", port.to_string(), "not a TCP port"))?;
        let agent = var("TORCHELASTIC_USE_AGENT_STORE").unwrap_or_default();
        Ok(Some(Launch {
            rank,
            world_size,
            local_rank,
            master_addr: var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
            agent_store: agent.eq_ignore_ascii_case("true") || agent == "1",
        }))
    }
}

/// The c10d process group that runs the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ProcessGroupGloo: CPU tensors, over TCP. Works everywhere; CUDA tensors go through host copies.
    Gloo,
    /// ProcessGroupNCCL: CUDA tensors of the rank's own GPU (`cuda:LOCAL_RANK`), over NVLink,
    /// PCIe or InfiniBand.
    Nccl,
}

impl Backend {
    /// The backend PyTorch picks for tensors on `device`: NCCL for CUDA where this build has it.
    pub fn for_device(device: tch::Device) -> Backend {
        match device {
            tch::Device::Cuda(_) if nccl_built() => Backend::Nccl,
            _ => Backend::Gloo,
        }
    }
}

/// Backpropagates from `t` with `grad` (its shape) as the gradient of `t`: autograd's
/// `t.backward(grad)`, which tch does not expose (its `backward` seeds ones). The trainer
/// computes the loss's gradient with respect to the logits itself and hands it on here.
pub fn backward_with_grad(t: &Tensor, grad: &Tensor) -> Result<(), tch::TchError> {
    if t.size() != grad.size() {
        return Err(tch::TchError::Shape(format!(
            "backward_with_grad: gradient of shape {:?} for a tensor of shape {:?}",
            grad.size(),
            t.size()
        )));
    }
    let (t, grad) = (t.shallow_clone(), grad.shallow_clone());
    call(|err, len| {
        // SAFETY: both pointers are tch's `at::Tensor*` of the shallow clones above, alive for
        // the call; the shim catches every C++ exception.
        #[allow(unsafe_code)]
        unsafe {
            ffi::gnmt_backward_with_grad(
                t.as_ptr() as *mut c_void,
                grad.as_ptr() as *mut c_void,
                err,
                len,
            )
        }
    })
    .map_err(tch::TchError::Torch)
}

/// Drops `t`'s gradient, as PyTorch's `zero_grad(set_to_none=True)`: `t.grad()` is undefined
/// until the next backward pass, which then hands its gradient over (no pass adding it to
/// zeros, and none zeroing it before).
pub fn clear_grad(t: &Tensor) {
    // SAFETY: tch's `at::Tensor*` of a live tensor, borrowed for the call. The shim skips an
    // undefined tensor, and resetting a gradient (present or not) throws nothing.
    #[allow(unsafe_code)]
    unsafe {
        ffi::gnmt_clear_grad(t.as_ptr() as *mut c_void)
    }
}

/// Whether this build carries ProcessGroupNCCL (build.rs found the CUDA and NCCL headers).
pub fn nccl_built() -> bool {
    // SAFETY: a constant query with no arguments.
    #[allow(unsafe_code)]
    unsafe {
        ffi::gnmt_dist_has_nccl() != 0
    }
}

/// The largest message the shim writes back.
const ERR_LEN: usize = 2048;

/// Calls a shim function that reports failure as non-zero plus a message.
fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), String> {
    let mut buf = vec![0u8; ERR_LEN];
    let rc = f(buf.as_mut_ptr().cast(), buf.len());
    if rc == 0 {
        return Ok(());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Err(String::from_utf8_lossy(&buf[..end]).trim().to_string())
}

/// A c10d process group with its store: the ranks of one job, connected.
#[derive(Debug)]
pub struct ProcessGroup {
    raw: *mut c_void,
    rank: usize,
    world: usize,
    /// Where the collectives' tensors live: the CPU for Gloo, the rank's GPU for NCCL.
    device: tch::Device,
    /// Cleared by the first failed operation: the group is then aborted, not shut down, when
    /// dropped (a shutdown could wait on a peer that is gone).
    clean: AtomicBool,
}

// SAFETY: the shim's Group (a c10d store and process group) may be used from any thread; c10d
// serializes collectives on the group internally. We never hand out the pointer.
#[allow(unsafe_code)]
unsafe impl Send for ProcessGroup {}
// SAFETY: as above; every method takes `&self` and c10d's process groups are thread-safe.
#[allow(unsafe_code)]
unsafe impl Sync for ProcessGroup {}

impl ProcessGroup {
    /// Meets the other ranks of `launch` (keys under the prefix `gnmt/`, so they cannot collide
    /// with torchrun's) and opens a Gloo group whose every operation fails after `timeout`.
    pub fn connect(launch: &Launch, timeout: Duration) -> Result<ProcessGroup, DistError> {
        ProcessGroup::connect_with(launch, timeout, Backend::Gloo)
    }

    /// [`ProcessGroup::connect`] with the process group of `backend`; NCCL's tensors live on
    /// `cuda:LOCAL_RANK`.
    pub fn connect_with(
        launch: &Launch,
        timeout: Duration,
        backend: Backend,
    ) -> Result<ProcessGroup, DistError> {
        if backend == Backend::Nccl && !nccl_built() {
            return Err(DistError::Usage(
                "NCCL was asked for, but this gnmt was built without it (the CUDA headers were \
                 missing at build time: run scripts/setup.sh and rebuild)"
                    .into(),
            ));
        }
        let host = CString::new(launch.master_addr.clone()).map_err(|_| DistError::Env {
            var: "MASTER_ADDR",
            value: launch.master_addr.clone(),
            msg: "holds a NUL byte".into(),
        })?;
        let prefix = c"gnmt/";
        let is_server = !launch.agent_store && launch.rank == 0;
        let ms = timeout.as_millis().min(i64::MAX as u128) as c_longlong;
        let mut raw: *mut c_void = std::ptr::null_mut();
        call(|err, len| {
            // SAFETY: the strings are NUL-terminated and outlive the call; `raw` is a valid out
            // pointer; `err` points at `len` writable bytes.
            #[allow(unsafe_code)]
            unsafe {
                ffi::gnmt_dist_connect(
                    host.as_ptr(),
                    c_int::from(launch.master_port),
                    launch.rank as c_int,
                    launch.world_size as c_int,
                    c_int::from(is_server),
                    prefix.as_ptr(),
                    c_int::from(backend == Backend::Nccl),
                    ms,
                    &mut raw,
                    err,
                    len,
                )
            }
        })
        .map_err(|reason| DistError::Rendezvous {
            rank: launch.rank,
            world: launch.world_size,
            addr: launch.master_addr.clone(),
            port: launch.master_port,
            secs: timeout.as_secs(),
            reason,
        })?;
        tracing::debug!(
            "rank {} of {}: {backend:?} group through {}:{}",
            launch.rank,
            launch.world_size,
            launch.master_addr,
            launch.master_port
        );
        let device = match backend {
            Backend::Gloo => tch::Device::Cpu,
            Backend::Nccl => tch::Device::Cuda(launch.local_rank),
        };
        Ok(ProcessGroup {
            raw,
            rank: launch.rank,
            world: launch.world_size,
            device,
            clean: AtomicBool::new(true),
        })
    }

    /// Where the tensors handed to the collectives must live.
    pub fn device(&self) -> tch::Device {
        self.device
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world
    }

    /// The error of a failed collective: with two ranks the lost peer is the other one.
    fn failed(&self, op: &'static str, reason: String) -> DistError {
        self.clean.store(false, Ordering::Relaxed);
        let suspect = match self.world {
            2 => format!("rank {} is gone or stalled", 1 - self.rank),
            _ => "another rank is gone or stalled".into(),
        };
        DistError::Collective {
            rank: self.rank,
            world: self.world,
            op,
            suspect,
            reason,
        }
    }

    /// Checks what every collective needs: a dense, contiguous tensor on the group's device.
    fn check(&self, op: &'static str, t: &Tensor) -> Result<(), DistError> {
        if t.device() != self.device || !t.is_contiguous() {
            return Err(DistError::Usage(format!(
                "{op}: the group takes contiguous tensors on {:?} (got {:?}, contiguous {})",
                self.device,
                t.device(),
                t.is_contiguous()
            )));
        }
        Ok(())
    }

    /// Sums `t` over all ranks, in place.
    pub fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), DistError> {
        self.check("all-reduce", t)?;
        let ptr = t.as_mut_ptr().cast::<c_void>();
        call(|err, len| {
            // SAFETY: `raw` is the live group; `ptr` is tch's `at::Tensor*`, alive for the call.
            #[allow(unsafe_code)]
            unsafe {
                ffi::gnmt_dist_all_reduce_sum(self.raw, ptr, err, len)
            }
        })
        .map_err(|r| self.failed("all-reduce", r))
    }

    /// Copies rank `root`'s `t` into every rank's `t` (same shape and kind everywhere).
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        self.check("broadcast", t)?;
        let ptr = t.as_mut_ptr().cast::<c_void>();
        call(|err, len| {
            // SAFETY: as in `all_reduce_sum`.
            #[allow(unsafe_code)]
            unsafe {
                ffi::gnmt_dist_broadcast(self.raw, ptr, root as c_int, err, len)
            }
        })
        .map_err(|r| self.failed("broadcast", r))
    }

    /// Every rank's `t` (same shape and kind everywhere), in rank order.
    pub fn all_gather(&self, t: &Tensor) -> Result<Vec<Tensor>, DistError> {
        self.check("all-gather", t)?;
        let mut input = t.shallow_clone();
        let mut outs: Vec<Tensor> = (0..self.world).map(|_| t.empty_like()).collect();
        let mut ptrs: Vec<*mut c_void> = outs.iter_mut().map(|o| o.as_mut_ptr().cast()).collect();
        let inp = input.as_mut_ptr().cast::<c_void>();
        call(|err, len| {
            // SAFETY: `ptrs` holds `world` live `at::Tensor*` (kept alive by `outs`), `inp` is
            // alive through `input`.
            #[allow(unsafe_code)]
            unsafe {
                ffi::gnmt_dist_all_gather(
                    self.raw,
                    inp,
                    ptrs.as_mut_ptr(),
                    self.world as c_int,
                    err,
                    len,
                )
            }
        })
        .map_err(|r| self.failed("all-gather", r))?;
        Ok(outs)
    }

    /// Waits until every rank is here.
    pub fn barrier(&self) -> Result<(), DistError> {
        call(|err, len| {
            // SAFETY: `raw` is the live group.
            #[allow(unsafe_code)]
            unsafe {
                ffi::gnmt_dist_barrier(self.raw, err, len)
            }
        })
        .map_err(|r| self.failed("barrier", r))
    }

    /// Publishes `value` under `key` in the job's store (for data too irregular for a tensor:
    /// a vocabulary, a run's state).
    pub fn store_set(&self, key: &str, value: &[u8]) -> Result<(), DistError> {
        let k = CString::new(key).map_err(|_| DistError::Usage(format!("store key {key:?}")))?;
        call(|err, len| {
            // SAFETY: `k` is NUL-terminated; `value` is valid for `value.len()` bytes.
            #[allow(unsafe_code)]
            unsafe {
                ffi::gnmt_dist_store_set(
                    self.raw,
                    k.as_ptr(),
                    value.as_ptr(),
                    value.len(),
                    err,
                    len,
                )
            }
        })
        .map_err(|r| self.failed("store set", r))
    }

    /// Removes `key` from the job's store (what was read need not stay in its memory); false
    /// when it was not there.
    pub fn store_delete(&self, key: &str) -> Result<bool, DistError> {
        let k = CString::new(key).map_err(|_| DistError::Usage(format!("store key {key:?}")))?;
        let mut deleted: std::ffi::c_int = 0;
        call(|err, len| {
            // SAFETY: `k` is NUL-terminated; `deleted` is a valid out pointer.
            #[allow(unsafe_code)]
            unsafe {
                ffi::gnmt_dist_store_delete(self.raw, k.as_ptr(), &mut deleted, err, len)
            }
        })
        .map_err(|r| self.failed("store delete", r))?;
        Ok(deleted != 0)
    }

    /// The value of `key`, waiting (up to the timeout) until some rank has set it.
    pub fn store_get(&self, key: &str) -> Result<Vec<u8>, DistError> {
        let k = CString::new(key).map_err(|_| DistError::Usage(format!("store key {key:?}")))?;
        let mut ptr: *mut c_uchar = std::ptr::null_mut();
        let mut n: usize = 0;
        call(|err, len| {
            // SAFETY: out pointers are valid; the shim allocates `*ptr` on success.
            #[allow(unsafe_code)]
            unsafe {
                ffi::gnmt_dist_store_get(self.raw, k.as_ptr(), &mut ptr, &mut n, err, len)
            }
        })
        .map_err(|r| self.failed("store get", r))?;
        // SAFETY: on success the shim hands back `n` initialized bytes at `ptr`, ours to free.
        #[allow(unsafe_code)]
        let bytes = unsafe {
            let v = std::slice::from_raw_parts(ptr, n).to_vec();
            ffi::gnmt_dist_bytes_free(ptr);
            v
        };
        Ok(bytes)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let clean = c_int::from(self.clean.load(Ordering::Relaxed));
        // SAFETY: `raw` came from gnmt_dist_connect and is freed once, here.
        #[allow(unsafe_code)]
        unsafe {
            ffi::gnmt_dist_free(self.raw, clean)
        }
    }
}

#[cfg(test)]
mod tests;
