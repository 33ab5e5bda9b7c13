//! The shim's C ABI (`cpp/shim.cpp`). Tensors cross as tch's `at::Tensor*`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_longlong, c_uchar, c_void};

extern "C" {
    #[allow(clippy::too_many_arguments)]
    pub fn gnmt_dist_connect(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        store_is_server: c_int,
        prefix: *const c_char,
        backend: c_int,
        timeout_ms: c_longlong,
        out: *mut *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn gnmt_dist_has_nccl() -> c_int;
    pub fn gnmt_dist_free(group: *mut c_void, clean: c_int);
    pub fn gnmt_dist_all_reduce_sum(
        group: *mut c_void,
        t: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn gnmt_dist_broadcast(
        group: *mut c_void,
        t: *mut c_void,
        root: c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn gnmt_dist_all_gather(
        group: *mut c_void,
        t: *mut c_void,
        outs: *mut *mut c_void,
        n: c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn gnmt_dist_barrier(group: *mut c_void, err: *mut c_char, errlen: usize) -> c_int;
    pub fn gnmt_dist_store_set(
        group: *mut c_void,
        key: *const c_char,
        value: *const c_uchar,
        len: usize,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn gnmt_dist_store_get(
        group: *mut c_void,
        key: *const c_char,
        value: *mut *mut c_uchar,
        len: *mut usize,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn gnmt_dist_store_delete(
        group: *mut c_void,
        key: *const c_char,
        deleted: *mut c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn gnmt_dist_bytes_free(p: *mut c_uchar);
    pub fn gnmt_backward_with_grad(
        t: *mut c_void,
        grad: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn gnmt_clear_grad(t: *mut c_void);
}
