//! `Publisher` and `Subscriber`: a broadcast's ends, subclasses of `Sender` and
//! `Receiver` (every send, receive, wait, readiness and asyncio method is theirs).

use crate::endpoints::{capacity_arg, owned_fd, PyReceiver, PySender};
use crate::error::IntoPyResult;
use pyo3::prelude::*;
use shmplane::{Publisher, Subscriber};

/// The publishing end of a broadcast (one publisher, many subscribers). See the stubs.
#[pyclass(module = "shmplane._shmplane", name = "Publisher", extends = PySender, frozen)]
pub struct PyPublisher;

/// A subscribing end of a broadcast. See the stubs.
#[pyclass(module = "shmplane._shmplane", name = "Subscriber", extends = PyReceiver, frozen)]
pub struct PySubscriber;

/// Register a new endpoint with `shmplane._handles.track` (see `endpoints::tracked`).
fn track<T: pyo3::PyClass>(obj: Bound<'_, T>) -> PyResult<Bound<'_, T>> {
    obj.py().import("shmplane._handles")?.call_method1("track", (&obj,))?;
    Ok(obj)
}

/// `max_subscribers` from Python: out-of-range values are an InvalidArgumentError (not
/// an OverflowError from the conversion).
fn subscribers_arg(py: Python<'_>, n: i64) -> PyResult<usize> {
    usize::try_from(n).ok().filter(|&n| (1..=shmplane::MAX_SUBSCRIBERS).contains(&n)).ok_or_else(|| {
        crate::error::to_py(
            py,
            shmplane::Error::InvalidArgument(format!("max_subscribers {n} must be between 1 and {}", shmplane::MAX_SUBSCRIBERS)),
        )
    })
}

fn publisher(py: Python<'_>, p: Publisher) -> PyResult<Bound<'_, PyPublisher>> {
    let init = PyClassInitializer::from(PySender::wrap(p.into_sender())).add_subclass(PyPublisher);
    track(Bound::new(py, init)?)
}

pub(crate) fn subscriber(py: Python<'_>, s: Subscriber) -> PyResult<Bound<'_, PySubscriber>> {
    let init = PyClassInitializer::from(PyReceiver::wrap(s.into_receiver())).add_subclass(PySubscriber);
    track(Bound::new(py, init)?)
}

#[pymethods]
impl PyPublisher {
    /// Create broadcast `name` and attach as its publisher.
    #[staticmethod]
    #[pyo3(signature = (name, capacity=shmplane::DEFAULT_CAPACITY as i64, lossy=false, max_subscribers=shmplane::DEFAULT_MAX_SUBSCRIBERS as i64))]
    fn create<'py>(py: Python<'py>, name: &str, capacity: i64, lossy: bool, max_subscribers: i64) -> PyResult<Bound<'py, Self>> {
        let capacity = capacity_arg(py, capacity)?;
        let max_subscribers = subscribers_arg(py, max_subscribers)?;
        let p = py.detach(|| Publisher::create_with(name, capacity, max_subscribers, lossy)).py_err(py)?;
        publisher(py, p)
    }

    /// A broadcast with a generated name (``shmplane.broadcast``).
    #[staticmethod]
    #[pyo3(signature = (capacity=shmplane::DEFAULT_CAPACITY as i64, lossy=false, max_subscribers=shmplane::DEFAULT_MAX_SUBSCRIBERS as i64))]
    fn _new(py: Python<'_>, capacity: i64, lossy: bool, max_subscribers: i64) -> PyResult<Bound<'_, Self>> {
        let capacity = capacity_arg(py, capacity)?;
        let max_subscribers = subscribers_arg(py, max_subscribers)?;
        let name = format!("anon-{}-{:x}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
        let p = py.detach(|| Publisher::create_with(&name, capacity, max_subscribers, lossy)).py_err(py)?;
        publisher(py, p)
    }

    /// Become the publisher of existing broadcast `name` (its publisher closed or died).
    #[staticmethod]
    #[pyo3(signature = (name, timeout=0.0))]
    fn open<'py>(py: Python<'py>, name: &str, timeout: Option<f64>) -> PyResult<Bound<'py, Self>> {
        let p = crate::wait::open_waiting(py, timeout, || Publisher::open(name))?;
        publisher(py, p)
    }

    /// Adopt descriptor `fd` (unpickling).
    #[staticmethod]
    #[pyo3(signature = (fd, name=None))]
    fn _from_fd<'py>(py: Python<'py>, fd: i32, name: Option<String>) -> PyResult<Bound<'py, Self>> {
        let fd = owned_fd(fd)?;
        let p = py.detach(|| Publisher::from_fd(fd, name)).py_err(py)?;
        publisher(py, p)
    }

    /// A new subscriber of this broadcast in this process.
    fn subscribe<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PySubscriber>> {
        let py = slf.py();
        let base = slf.as_super().get();
        let name = base.lock(py)?.name().map(str::to_owned);
        let Some(name) = name else { return Err(crate::error::to_py(py, shmplane::Error::Closed)) };
        let s = py.detach(|| Subscriber::open(&name)).py_err(py)?;
        subscriber(py, s)
    }

    /// Subscribers now.
    #[getter]
    fn subscribers(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Ok(slf.as_super().get().lock(slf.py())?.subscribers().unwrap_or(0))
    }

    /// Most subscribers at once.
    #[getter]
    fn max_subscribers(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Ok(slf.as_super().get().lock(slf.py())?.max_subscribers().unwrap_or(0))
    }

    /// True for a lossy broadcast.
    #[getter]
    fn lossy(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Ok(slf.as_super().get().lock(slf.py())?.is_lossy())
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._handles")?.call_method1("reduce_endpoint", (slf, "publisher"))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        match slf.as_super().get().inner.try_lock() {
            Ok(e) if e.is_closed() => "<shmplane.Publisher closed>".into(),
            Ok(e) => format!(
                "<shmplane.Publisher name={:?} capacity={} lossy={} subscribers={}/{}>",
                e.name().unwrap_or(""),
                e.capacity(),
                if e.is_lossy() { "True" } else { "False" },
                e.subscribers().unwrap_or(0),
                e.max_subscribers().unwrap_or(0)
            ),
            Err(_) => "<shmplane.Publisher busy>".into(),
        }
    }
}

#[pymethods]
impl PySubscriber {
    /// Join broadcast `name` as a new subscriber.
    #[staticmethod]
    #[pyo3(signature = (name, timeout=0.0))]
    fn open<'py>(py: Python<'py>, name: &str, timeout: Option<f64>) -> PyResult<Bound<'py, Self>> {
        let s = crate::wait::open_waiting(py, timeout, || Subscriber::open(name))?;
        subscriber(py, s)
    }

    /// Refused: a broadcast is created by its publisher (``Publisher.create``); this
    /// would otherwise be ``Receiver.create`` and make a channel.
    #[staticmethod]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn create(py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>, _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>) -> PyResult<()> {
        Err(crate::error::to_py(
            py,
            shmplane::Error::InvalidArgument(
                "a broadcast is created by its publisher: shmplane.Publisher.create(name, ...) or shmplane.broadcast(...), then Subscriber.open(name)".into(),
            ),
        ))
    }

    /// Adopt descriptor `fd` holding subscriber slot `index` (unpickling).
    #[staticmethod]
    #[pyo3(signature = (fd, index, name=None, doorbell_fd=None))]
    fn _from_fd<'py>(py: Python<'py>, fd: i32, index: usize, name: Option<String>, doorbell_fd: Option<i32>) -> PyResult<Bound<'py, Self>> {
        let fd = owned_fd(fd)?;
        let doorbell = doorbell_fd.map(owned_fd).transpose()?;
        let s = py.detach(|| Subscriber::from_fd(fd, doorbell, name, index)).py_err(py)?;
        subscriber(py, s)
    }

    /// This subscriber's slot (None once closed).
    #[getter]
    fn index(slf: &Bound<'_, Self>) -> PyResult<Option<usize>> {
        Ok(slf.as_super().get().lock(slf.py())?.subscriber_index())
    }

    /// True for a lossy broadcast.
    #[getter]
    fn lossy(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Ok(slf.as_super().get().lock(slf.py())?.is_lossy())
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._handles")?.call_method1("reduce_endpoint", (slf, "subscriber"))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        match slf.as_super().get().inner.try_lock() {
            Ok(e) if e.is_closed() => "<shmplane.Subscriber closed>".into(),
            Ok(e) => format!(
                "<shmplane.Subscriber name={:?} index={} lossy={}>",
                e.name().unwrap_or(""),
                e.subscriber_index().unwrap_or(0),
                if e.is_lossy() { "True" } else { "False" }
            ),
            Err(_) => "<shmplane.Subscriber busy>".into(),
        }
    }
}
