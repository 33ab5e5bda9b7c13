//! Kernels written once as plain loops and compiled for each instruction set.
//!
//! Some kernels (dropout masks, the fused loss, int8's row quantization) need no intrinsics: the
//! compiler vectorizes their loops, as wide as the target features it is given allow. So one
//! `#[inline(always)]` body is inlined into an AVX-512 build, an AVX2/FMA build and a portable
//! one, and a dispatcher picks among them at run time. [`per_isa!`] writes those builds and the
//! dispatcher, so that the `unsafe` calls and their safety argument live here once.

/// Defines `fn NAME(isa: Isa, ARGS...) -> RET`, which runs `BODY(ARGS...)` compiled for the best
/// of [`Isa::Avx512`](crate::Isa), [`Isa::Avx2`](crate::Isa) and [`Isa::Portable`](crate::Isa)
/// that both `isa` and this CPU ([`Isa::supported`](crate::Isa::supported)) allow. `BODY` must
/// be `#[inline(always)]`, so that each build has its own copy compiled for its instruction set.
/// Callers pass [`Isa::detected`](crate::Isa::detected) (which honours `GNMT_MAX_ISA`); tests
/// pass each build in turn. Generic parameters go in brackets:
///
/// ```text
/// per_isa! {
///     /// Docs of the dispatcher.
///     pub(crate) fn fill_on[T: Copy](out: &mut [T], x: T) = fill_with;
/// }
/// ```
macro_rules! per_isa {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $([$($gen:tt)*])? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
            = $body:ident;
    ) => {
        $(#[$attr])*
        $vis fn $name $(<$($gen)*>)? (isa: $crate::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
                fn avx512 $(<$($gen)*>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2 $(<$($gen)*>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                let isa = isa.min($crate::Isa::supported());
                if isa >= $crate::Isa::Avx512 {
                    // SAFETY: the CPU has AVX-512 F, DQ, BW and VL (Isa::supported).
                    #[allow(unsafe_code)]
                    return unsafe { avx512($($arg),*) };
                }
                if isa >= $crate::Isa::Avx2 {
                    // SAFETY: the CPU has AVX2 and FMA (Isa::supported).
                    #[allow(unsafe_code)]
                    return unsafe { avx2($($arg),*) };
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = isa;
            $body($($arg),*)
        }
    };
}
