//! Borrowing the elements of CPU tensors as slices, for the kernels.

use tch::{Device, Kind, Tensor};

/// The elements of `t` if it is a contiguous float32 CPU tensor, else None.
///
/// # Safety
/// The slice aliases the tensor's storage, which other handles (shallow clones, views) may
/// share: nothing may write to that storage while the slice lives.
#[allow(unsafe_code)]
pub unsafe fn f32_slice(t: &Tensor) -> Option<&[f32]> {
    if !t.defined() || t.device() != Device::Cpu || t.kind() != Kind::Float || !t.is_contiguous() {
        return None;
    }
    let n = t.numel();
    let ptr = t.data_ptr() as *const f32;
    if n == 0 || ptr.is_null() {
        return Some(&[]);
    }
    // SAFETY: a contiguous float32 CPU tensor of `n` elements spans `n` initialised floats from
    // its data pointer, which stays valid while `t` (borrowed for the slice's lifetime) holds
    // the storage; writes through other handles are excluded by the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(ptr, n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn borrows_only_contiguous_float_cpu_tensors() {
        let t = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).view([2, 3]);
        // SAFETY: no other handle writes to these tensors.
        unsafe {
            assert_eq!(f32_slice(&t), Some(&[1f32, 2., 3., 4., 5., 6.][..]));
            assert_eq!(f32_slice(&t.tr()), None);
            assert_eq!(f32_slice(&t.to_kind(Kind::Double)), None);
            assert_eq!(f32_slice(&t.narrow(0, 1, 1)), Some(&[4f32, 5., 6.][..]));
        }
    }
}
