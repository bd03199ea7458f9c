//! loom models of shmplane's lock-free algorithms; see `tests/`. Built only with
//! `RUSTFLAGS="--cfg shmplane_loom"` (ci/loom.sh).
