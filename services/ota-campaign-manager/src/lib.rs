//! The campaign manager: software packages, update campaigns and their
//! rollout in waves, every targeted vehicle's action state, approvals, the
//! audit log and reports.
