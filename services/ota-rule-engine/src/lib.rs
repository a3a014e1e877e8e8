//! CEL targeting (in progress).
