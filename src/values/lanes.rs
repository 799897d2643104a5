//! Kernels written as plain loops over lanes, compiled once per instruction set.

/// The body of a kernel function `fn(args) -> R` that runs `$body` compiled for
/// AVX-512F when the CPU has it, else for AVX2, else as is (as is off x86-64).
/// `$body` is a plain loop the compiler vectorises for each (an `#[inline(always)]`
/// function of the arguments); `avx512: $wide` gives the AVX-512 build its own
/// body (e.g. more lanes). The arguments are listed with their types:
///
/// ```ignore
/// fn add_to_f64(acc: &mut [f64], row: &[f32]) {
///     dispatch!((acc: &mut [f64], row: &[f32]) -> (), lanes(acc, row))
/// }
/// ```
macro_rules! dispatch {
    (($($a:ident: $t:ty),* $(,)?) -> $r:ty, $body:expr) => {
        $crate::values::dispatch!(($($a: $t),*) -> $r, $body, avx512: $body)
    };
    (($($a:ident: $t:ty),* $(,)?) -> $r:ty, $body:expr, avx512: $wide:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($a: $t),*) -> $r {
                $wide
            }
            #[target_feature(enable = "avx2")]
            unsafe fn avx2($($a: $t),*) -> $r {
                $body
            }
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above).
                return unsafe { avx512($($a),*) };
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { avx2($($a),*) };
            }
        }
        $body
    }};
}

pub(crate) use dispatch;
