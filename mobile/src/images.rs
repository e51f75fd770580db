//! Pictures through the C ABI: a CLIP model embeds a PNG or JPEG file's bytes into the space
//! its texts (`edgecut_embed`) go to.

use crate::EdgecutStatus::*;
use crate::{encoder, fail, guard, lookup, output, EdgecutModel, EdgecutStatus, Failure};

/// Embeds one picture (the bytes of a PNG or JPEG file, `len` of them) with a CLIP model into
/// `out` (`dim` floats, L2-normalised, comparable with `edgecut_embed`'s vectors of texts).
/// When `out_len` is smaller than `dim`, writes `dim` to `needed` (if not null) and returns
/// `EDGECUT_STATUS_BUFFER_TOO_SMALL`. A picture that cannot be read (not PNG or JPEG,
/// truncated, over the size limits) gives `EDGECUT_STATUS_INVALID_ARGUMENT` with the reason
/// in `edgecut_last_error`; a model that embeds texts only, `EDGECUT_STATUS_INVALID_ARGUMENT`.
/// Thread-safe.
///
/// # Safety
/// `bytes` points to `len` readable bytes; `out` is null or has room for `out_len` floats;
/// `needed` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn edgecut_embed_image(
    model: EdgecutModel,
    bytes: *const u8,
    len: usize,
    out: *mut f32,
    out_len: usize,
    needed: *mut usize,
) -> EdgecutStatus {
    guard(|| {
        let m = lookup(model)?;
        let s = encoder(&m)?;
        if !s.embeds_images() {
            return fail(
                EDGECUT_STATUS_INVALID_ARGUMENT,
                "this model embeds texts only; pictures need a CLIP model",
            );
        }
        if bytes.is_null() {
            return fail(EDGECUT_STATUS_NULL_POINTER, "bytes is null");
        }
        let dim = s.embedding_dim();
        // SAFETY: `out` and `needed` as the caller's contract says.
        let dst = unsafe {
            output(out, out_len, needed, dim, || {
                format!("a picture needs {dim}")
            })
        }?;
        // SAFETY: `bytes` has `len` readable bytes (the caller's contract), checked non-null.
        let picture = unsafe { std::slice::from_raw_parts(bytes, len) };
        let v = s.embed_images(&[picture]).map_err(|e| match e {
            edgecut::Error::Image { source, .. } => {
                Failure(EDGECUT_STATUS_INVALID_ARGUMENT, source.to_string())
            }
            other => Failure(EDGECUT_STATUS_MODEL_ERROR, other.to_string()),
        })?;
        dst.copy_from_slice(&v[0]);
        Ok(())
    })
}
