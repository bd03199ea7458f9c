//! Python bindings of shmplane: the native module `shmplane._shmplane`.
//!
//! Thin newtypes over the `shmplane` crate (`Py*`), one error mapping (`error.rs`),
//! waits with the GIL released in slices and `check_signals()` between them.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![allow(missing_docs)] // pyo3 methods are documented in the .pyi stubs

mod broadcast;
mod endpoints;
mod error;
mod fastslot;
mod lease;
mod loan;
mod mailbox;
mod numbers;
mod rpc;
mod slot;
mod wait;

use pyo3::prelude::*;

/// Remove stale segments of this user; returns their names.
#[pyfunction]
fn gc(py: Python<'_>) -> Vec<String> {
    py.detach(shmplane::gc)
}

/// Remove dead processes' anonymous segments, once per process (the first anonymous
/// `RawValue`/`RawArray` calls it; channels do it in Rust).
#[pyfunction]
fn _sweep_dead_anonymous_once(py: Python<'_>) {
    py.detach(shmplane_sweep_once)
}

/// `shmplane.set_sharing` (see the stub): the process-wide sharing policy.
#[pyfunction]
#[pyo3(signature = (mode=0, allow_uids=Vec::new()))]
fn _set_sharing(py: Python<'_>, mode: u32, allow_uids: Vec<u32>) -> PyResult<()> {
    shmplane::set_sharing(mode, &allow_uids).map_err(|e| crate::error::to_py(py, e))
}

/// The sharing policy: `(mode, allow_uids)`.
#[pyfunction]
fn _sharing() -> (u32, Vec<u32>) {
    let s = shmplane::sharing();
    (s.mode, s.trusted_uids)
}

/// Put the SIGBUS guard back on top of the signal's handlers (after `faulthandler`
/// replaced it: see `shmplane/__init__.py`).
#[pyfunction]
fn _reinstall_sigbus_guard() {
    shmplane::reinstall_sigbus_guard();
}

fn shmplane_sweep_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        shmplane::sweep_dead_anonymous();
    });
}

/// Every shmplane segment (or only `name`) as dicts: name, kind, size, age_s,
/// creator_pid, params, roles (index, name, state, pid), stale, published_bytes,
/// pending_bytes, error. Read only.
#[pyfunction]
#[pyo3(signature = (name=None))]
fn _survey(py: Python<'_>, name: Option<String>) -> PyResult<Vec<Py<pyo3::types::PyDict>>> {
    use pyo3::types::PyDict;
    let names = match name {
        Some(n) => vec![n],
        None => py.detach(shmplane::survey::names),
    };
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let s = py.detach(|| shmplane::survey::survey(&n));
        let d = PyDict::new(py);
        d.set_item("name", &s.name)?;
        d.set_item("kind", s.kind)?;
        d.set_item("size", s.size)?;
        d.set_item("age_s", s.age_s)?;
        d.set_item("creator_pid", s.creator_pid)?;
        d.set_item("params", (s.params.0, s.params.1))?;
        let roles = pyo3::types::PyList::empty(py);
        for r in &s.roles {
            let rd = PyDict::new(py);
            rd.set_item("index", r.index)?;
            rd.set_item("name", r.name)?;
            rd.set_item("state", r.state)?;
            rd.set_item("pid", r.pid)?;
            roles.append(rd)?;
        }
        d.set_item("roles", roles)?;
        d.set_item("stale", s.stale)?;
        d.set_item("published_bytes", s.published_bytes)?;
        d.set_item("pending_bytes", s.pending_bytes)?;
        d.set_item("error", s.error)?;
        out.push(d.unbind());
    }
    Ok(out)
}

/// Create a channel: returns `(Sender, Receiver)`.
#[pyfunction]
#[pyo3(signature = (capacity=endpoints::DEFAULT_CAPACITY as i64, name=None))]
fn _channel<'py>(
    py: Python<'py>,
    capacity: i64,
    name: Option<&str>,
) -> PyResult<(Bound<'py, endpoints::PySender>, Bound<'py, endpoints::PyReceiver>)> {
    use error::IntoPyResult;
    let capacity = endpoints::capacity_arg(py, capacity)?;
    let (tx, rx) = py
        .detach(|| match name {
            Some(n) => shmplane::channel_named(n, capacity),
            None => shmplane::channel(capacity),
        })
        .py_err(py)?;
    Ok((
        endpoints::tracked(py, endpoints::PySender::wrap(tx))?,
        endpoints::tracked(py, endpoints::PyReceiver::wrap(rx))?,
    ))
}

#[pymodule]
fn _shmplane(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<endpoints::PySender>()?;
    m.add_class::<endpoints::PyReceiver>()?;
    m.add_class::<lease::PyLease>()?;
    m.add_class::<lease::PyViewPart>()?;
    m.add_class::<loan::PyLoan>()?;
    m.add_class::<broadcast::PyPublisher>()?;
    m.add_class::<broadcast::PySubscriber>()?;
    m.add_class::<mailbox::PyMailbox>()?;
    mailbox::add_pending(&m.py().get_type::<mailbox::PyMailbox>())?;
    m.add_class::<rpc::PyRpcServer>()?;
    m.add_class::<rpc::PyRpcClient>()?;
    m.add_class::<rpc::PyRequest>()?;
    m.add_class::<slot::PyByteSlot>()?;
    m.add_class::<slot::PySlotView>()?;
    m.add_class::<slot::PyField>()?;
    fastslot::add(m)?;
    m.add_function(wrap_pyfunction!(_channel, m)?)?;
    m.add_function(wrap_pyfunction!(gc, m)?)?;
    m.add_function(wrap_pyfunction!(_sweep_dead_anonymous_once, m)?)?;
    m.add_function(wrap_pyfunction!(_reinstall_sigbus_guard, m)?)?;
    m.add_function(wrap_pyfunction!(_set_sharing, m)?)?;
    m.add_function(wrap_pyfunction!(_sharing, m)?)?;
    m.add_function(wrap_pyfunction!(_survey, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_CAPACITY", endpoints::DEFAULT_CAPACITY)?;
    m.add("DEFAULT_LANE_CAPACITY", mailbox::DEFAULT_LANE_CAPACITY)?;
    m.add("DEFAULT_MAX_SENDERS", mailbox::DEFAULT_MAX_SENDERS)?;
    m.add("DEFAULT_MAX_SUBSCRIBERS", shmplane::DEFAULT_MAX_SUBSCRIBERS)?;
    m.add("DEFAULT_MAX_CLIENTS", shmplane::rpc::DEFAULT_MAX_CLIENTS)?;
    m.add("TAG_BYTES", shmplane::frame::TAG_BYTES)?;
    m.add("TAG_ARRAY", shmplane::frame::TAG_ARRAY)?;
    m.add("TAG_PICKLE", shmplane::frame::TAG_PICKLE)?;
    m.add("MAX_PARTS", shmplane::frame::MAX_PARTS)?;
    m.add("WIRE_VERSION", shmplane::frame::WIRE_VERSION)?;
    m.add("MAX_SLOT_BYTES", shmplane::MAX_SLOT_BYTES)?;
    Ok(())
}
