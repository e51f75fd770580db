//! Reranking through the C ABI: a cross-encoder's score of each document against a query.

use std::ffi::c_char;

use crate::EdgecutStatus::*;
use crate::{encoder, fail, guard, lookup, text, EdgecutModel, EdgecutStatus, Failure};

/// Scores `n_docs` documents against `query` with a cross-encoder (a classifier with one
/// output): one raw score (logit; higher is more relevant) per document into `scores`, in input
/// order. The query is kept whole; documents are cut to fit the model. `scores_len` smaller
/// than `n_docs` gives `EDGECUT_STATUS_BUFFER_TOO_SMALL`; a model that is not a cross-encoder,
/// `EDGECUT_STATUS_MODEL_ERROR`. Thread-safe.
///
/// # Safety
/// `query` is a NUL-terminated string; `docs` points to `n_docs` NUL-terminated strings;
/// `scores` is null or has room for `scores_len` floats.
#[no_mangle]
pub unsafe extern "C" fn edgecut_rerank(
    model: EdgecutModel,
    query: *const c_char,
    docs: *const *const c_char,
    n_docs: usize,
    scores: *mut f32,
    scores_len: usize,
) -> EdgecutStatus {
    guard(|| {
        let m = lookup(model)?;
        let s = encoder(&m)?;
        if n_docs == 0 {
            return fail(EDGECUT_STATUS_INVALID_ARGUMENT, "n_docs is 0");
        }
        if scores_len < n_docs {
            return fail(
                EDGECUT_STATUS_BUFFER_TOO_SMALL,
                format!("scores holds {scores_len} floats; {n_docs} documents need {n_docs}"),
            );
        }
        if docs.is_null() {
            return fail(EDGECUT_STATUS_NULL_POINTER, "docs is null");
        }
        if scores.is_null() {
            return fail(EDGECUT_STATUS_NULL_POINTER, "scores is null");
        }
        // SAFETY: checked for null inside.
        let q = unsafe { text(query, "query") }?;
        let mut strs = Vec::with_capacity(n_docs);
        for i in 0..n_docs {
            // SAFETY: `docs` has n_docs entries (the caller's contract).
            let p = unsafe { *docs.add(i) };
            // SAFETY: each entry is null (checked inside) or a NUL-terminated string.
            strs.push(unsafe { text(p, &format!("docs[{i}]")) }?);
        }
        let r = s
            .rerank(q, &strs)
            .map_err(|e| Failure(EDGECUT_STATUS_MODEL_ERROR, e.to_string()))?;
        // SAFETY: scores has room for scores_len >= n_docs floats (checked above).
        unsafe { std::slice::from_raw_parts_mut(scores, n_docs) }.copy_from_slice(&r.scores);
        Ok(())
    })
}
