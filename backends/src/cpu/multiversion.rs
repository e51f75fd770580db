//! Run-time multiversioning for the autovectorised (non-kernel) CPU code.
//!
//! The crate is compiled for the baseline of its target (SSE2 on x86-64), so loops that LLVM
//! vectorises get 4-wide vectors. [`multiversion!`] compiles a function's body twice more,
//! inside an AVX-512 and an AVX2 `#[target_feature]` function, and picks one at run time as the
//! kernel table says, the way the hand-written kernels are picked. All versions compute the
//! same operations in the same order (Rust never contracts or reorders float operations on its
//! own), so results do not depend on the CPU.

/// Whether the AVX-512 versions can run here.
#[cfg(target_arch = "x86_64")]
pub fn avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
}

/// Whether the AVX2 versions can run here.
#[cfg(target_arch = "x86_64")]
pub fn avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Defines `fn $name(kernels: &Kernels, args) -> ret { body }` with a baseline, an AVX2 and an
/// AVX-512 version of `body`; the kernel table's `wide` and `wide_avx2` slots pick one (the
/// scalar set: always the baseline).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name(
            kernels: &$crate::cpu::Kernels,
            $($arg: $ty),*
        ) $(-> $ret)? {
            #[inline(always)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                fn wide($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                if kernels.wide && $crate::cpu::multiversion::avx512() {
                    $crate::cpu::kernels::note_simd();
                    // SAFETY: the features `wide` is compiled for were detected just above.
                    return unsafe { wide($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                fn wide_avx2($($arg: $ty),*) $(-> $ret)? {
                    inner($($arg),*)
                }
                if kernels.wide_avx2 && $crate::cpu::multiversion::avx2() {
                    $crate::cpu::kernels::note_simd();
                    // SAFETY: the features `wide_avx2` is compiled for were detected just above.
                    return unsafe { wide_avx2($($arg),*) };
                }
            }
            let _ = kernels;
            inner($($arg),*)
        }
    };
}
pub(crate) use multiversion;
