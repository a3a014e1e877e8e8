//! Staging: every vehicle's pending actions pre-computed into one document
//! under one key, so a vehicle's fetch is a single lookup.
