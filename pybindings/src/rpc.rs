//! The `RpcServer`, `Request` and `RpcClient` Python classes over `shmplane::RpcServer`
//! and `shmplane::RpcClient`: requests and replies are any object a channel carries
//! (bytes, ndarrays, pickles), encoded and decoded by the channel's code; a call is one
//! message each way.

use crate::endpoints::{lock, parse_policy, policy_name, receive_classified, receive_within, tracked, with_outgoing};
use crate::error::{to_py, IntoPyResult};
use crate::wait::{blocking_checked, lock_for_close, spin_holding_gil, CloseFlag, Timeout};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use shmplane::rpc::{flags, DEFAULT_MAX_CLIENTS, DEFAULT_REPLY_CAPACITY, DEFAULT_REQUEST_CAPACITY};
use shmplane::{CallId, Error, RpcClient, RpcServer, Wait};
use std::sync::{Mutex, MutexGuard};

/// Look for the current call's reply with the GIL held for a microsecond or two (see
/// `spin_holding_gil`) before releasing it to wait; true once it is there.
fn spin_for_reply(client: &mut RpcClient) -> Result<bool, Error> {
    spin_holding_gil(client.current_wait_policy(), || match client.wait_reply(&mut Wait::no_wait()) {
        Ok(()) => Ok(true),
        Err(Error::Empty) => Ok(false),
        Err(e) => Err(e),
    })
}

/// Largest record of a default reply channel (bounds the out-of-band buffers a reply
/// may describe).
const REPLY_RECORD: usize = DEFAULT_REPLY_CAPACITY - 32;

/// True if `e` is an instance of `shmplane.errors.<name>`.
fn is_error(py: Python<'_>, e: &PyErr, name: &str) -> bool {
    crate::error::exception_type(py, name).is_ok_and(|t| e.is_instance(py, t.as_any()))
}

/// An exception's type name, message and formatted traceback (what `RemoteError`
/// carries to the client).
fn describe(py: Python<'_>, e: &PyErr) -> (String, String, String) {
    let kind = e.get_type(py).name().map_or_else(|_| "Exception".to_owned(), |n| n.to_string());
    let message = e.value(py).to_string();
    let tb = py
        .import("traceback")
        .and_then(|m| m.getattr("format_exception"))
        .and_then(|f| f.call1((e.get_type(py), e.value(py), e.traceback(py))))
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|l| l.concat())
        .unwrap_or_default();
    (kind, message, tb)
}

fn usize_arg(py: Python<'_>, what: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| to_py(py, Error::InvalidArgument(format!("{what} {v} must be positive"))))
}

// ------------------------------------------------------------------------- server

/// The serving end of an RPC endpoint. See the stub.
#[pyclass(module = "shmplane._shmplane", name = "RpcServer", frozen, weakref)]
pub struct PyRpcServer {
    inner: Mutex<RpcServer>,
    closing: CloseFlag,
    /// Readable while another thread serves (the lock is held then).
    name: String,
    max_clients: usize,
}

impl PyRpcServer {
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, RpcServer>> {
        lock(py, &self.inner, "RpcServer")
    }

    /// The next call as (id, request object), waiting per `timeout`.
    fn next_call(&self, py: Python<'_>, timeout: Option<f64>, block: bool) -> PyResult<(CallId, Py<PyAny>)> {
        let timeout = Timeout::new(timeout, block)?;
        let mut guard = self.lock(py)?;
        let server: &mut RpcServer = &mut guard;
        let mut spun = false;
        loop {
            let got = match server.begin(&mut Wait::no_wait()) {
                // The rest of a request of several records: each record within the reply
                // timeout of the one before (the request is bounded: a client stopped
                // part-way cannot hold the server), and a close ends it.
                Ok((call, incoming)) => Some((call, receive_classified(py, incoming, false, &Timeout::forever(), Some(&self.closing)))),
                Err(Error::Empty) if timeout.blocks() => None,
                Err(e) => return Err(to_py(py, e)),
            };
            if let Some((call, value)) = got {
                match value {
                    Ok(v) => return Ok((call, v)),
                    // Not read whole (its client died, gave up or stalled part-way, or a
                    // signal handler's exception or a close interrupted the copy):
                    // forgotten, so that the client's retry runs. The client's doing
                    // (truncated, stalled) is skipped; anything else is the caller's.
                    Err((e, false)) => {
                        server.abandon(call);
                        if ["TruncatedMessageError", "Timeout"].iter().any(|n| is_error(py, &e, n)) {
                            continue;
                        }
                        return Err(e); // KeyboardInterrupt, a handler's exception, a close
                    }
                    // Interrupted while being decoded (KeyboardInterrupt in an
                    // unpickler): not run, so forgotten (the retry runs); the caller's.
                    Err((e, true)) if !e.is_instance_of::<PyException>(py) => {
                        server.abandon(call);
                        return Err(e);
                    }
                    // Taken but it cannot be used (unpickling failed, too large to
                    // allocate): the call is answered with that error; the server goes on.
                    Err((e, true)) => {
                        let (kind, message, tb) = describe(py, &e);
                        let wait = Timeout::new(Some(server.reply_timeout().as_secs_f64()), true)?;
                        let _ = blocking_checked(py, &wait, |_| Ok(()), |w| server.reply_error_with(call, &kind, &message, &tb, w));
                        continue;
                    }
                }
            }
            if !spun && timeout.blocks() {
                // The next call often comes within a microsecond or two (a client
                // calling back to back): looked for with the GIL held first, by the
                // pending bits and polled slots only (a load each; `poll` would also
                // re-arm an open descriptor, a syscall per look).
                spun = true;
                if spin_holding_gil(server.current_wait_policy(), || Ok(server.pending())).py_err(py)? {
                    continue;
                }
            }
            if !blocking_checked(py, &timeout, |py| self.closing.check(py), |wait| server.poll(wait))? {
                return Err(to_py(py, Error::Timeout));
            }
        }
    }

    fn request(slf: &Bound<'_, Self>, call: CallId, value: Py<PyAny>) -> PyResult<Py<PyRequest>> {
        Py::new(slf.py(), PyRequest { server: slf.clone().unbind(), call, value, answered: Mutex::new(false) })
    }

    /// Answer `call` with an error, waiting (without the GIL) at most the reply timeout.
    pub(crate) fn send_error(&self, py: Python<'_>, call: CallId, kind: &str, message: &str, tb: &str) -> PyResult<bool> {
        let mut guard = self.lock(py)?;
        let server: &mut RpcServer = &mut guard;
        let timeout = Timeout::new(Some(server.reply_timeout().as_secs_f64()), true)?;
        blocking_checked(py, &timeout, |py| self.closing.check(py), |w| server.reply_error_with(call, kind, message, tb, w))
    }

    /// Send a reply to `call` (see `Request.reply`); `timeout` None: the server's reply
    /// timeout.
    pub(crate) fn send_reply(&self, py: Python<'_>, call: CallId, obj: &Bound<'_, PyAny>, last: bool, timeout: Option<f64>) -> PyResult<bool> {
        with_outgoing(py, obj, REPLY_RECORD, |msg| {
            let mut guard = self.lock(py)?;
            let server: &mut RpcServer = &mut guard;
            let timeout = Timeout::new(Some(timeout.unwrap_or_else(|| server.reply_timeout().as_secs_f64())), true)?;
            // With the GIL and no wait: a small reply and room for it (the common case).
            if msg.total() < crate::wait::GIL_RELEASE_BYTES {
                match server.reply_with(call, msg.clone(), last, Wait::no_wait()) {
                    Ok(sent) => return Ok(sent),
                    Err(Error::Full) => {}
                    Err(e) => return Err(to_py(py, e)),
                }
            }
            blocking_checked(py, &timeout, |py| self.closing.check(py), |wait| server.reply_with(call, msg, last, wait))
        })
    }
}

#[pymethods]
impl PyRpcServer {
    /// Create server `name` (see the stub).
    #[staticmethod]
    #[pyo3(signature = (name, max_clients=DEFAULT_MAX_CLIENTS as i64, capacity=DEFAULT_REQUEST_CAPACITY as i64, reply_timeout=5.0))]
    fn create<'py>(py: Python<'py>, name: &str, max_clients: i64, capacity: i64, reply_timeout: f64) -> PyResult<Bound<'py, Self>> {
        let max_clients = usize_arg(py, "max_clients", max_clients)?;
        let capacity = crate::endpoints::capacity_arg(py, capacity)?;
        if !(reply_timeout.is_finite() && reply_timeout > 0.0) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!("reply_timeout must be a positive number of seconds, got {reply_timeout}")));
        }
        let mut server = py.detach(|| RpcServer::create_with(name, capacity, max_clients)).py_err(py)?;
        server.set_reply_timeout(std::time::Duration::from_secs_f64(reply_timeout.min(1e9)));
        let (name, max_clients) = (server.name().to_owned(), server.max_clients());
        tracked(py, PyRpcServer { inner: Mutex::new(server), closing: CloseFlag::default(), name, max_clients })
    }

    /// The next call (see the stub).
    #[pyo3(signature = (timeout=None))]
    fn recv(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Py<PyRequest>> {
        let (call, value) = slf.get().next_call(slf.py(), timeout, true)?;
        PyRpcServer::request(slf, call, value)
    }

    /// The next call without waiting; raises `Empty` if none.
    fn try_recv(slf: &Bound<'_, Self>) -> PyResult<Py<PyRequest>> {
        let (call, value) = slf.get().next_call(slf.py(), None, false)?;
        PyRpcServer::request(slf, call, value)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next call, waiting forever; iteration ends when the server is closed.
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyRequest>>> {
        match slf.get().next_call(slf.py(), None, true) {
            Ok((call, value)) => Ok(Some(PyRpcServer::request(slf, call, value)?)),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyEOFError>(slf.py()) => Ok(None),
            Err(e) if slf.get().closing_requested() => {
                let _ = e;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Serve forever (see the stub): `handler(value)`'s return value is the reply; an
    /// exception it raises is sent as `RemoteError`.
    fn serve(slf: &Bound<'_, Self>, handler: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        loop {
            let (call, value) = match slf.get().next_call(py, None, true) {
                Ok(c) => c,
                Err(_) if slf.get().closing_requested() => return Ok(()),
                // One client's corrupt lane: reported once by the library, then skipped.
                Err(e) if is_error(py, &e, "CorruptSegmentError") => continue,
                Err(e) => return Err(e),
            };
            let result = handler.call1((value,));
            // The reply (or its encoding) may fail too: an encoding error (an
            // unpicklable result) is sent as the call's error; a reply that timed out
            // was given up (the client's retry is told); serving goes on.
            let failure = match result {
                Ok(result) => match slf.get().send_reply(py, call, &result, true, None) {
                    Ok(_) => None,
                    Err(_) if slf.get().closing_requested() => return Ok(()),
                    // Given up after the reply timeout (the client did not make room):
                    // its retry is told ReplyLost.
                    Err(e) if is_error(py, &e, "Timeout") => None,
                    // Nothing sent (an unpicklable result, a header too large for the
                    // client's channel, ...): the call's answer is that error.
                    Err(e) if e.is_instance_of::<PyException>(py) => Some(e),
                    Err(e) => {
                        // KeyboardInterrupt while replying: the call is not left running.
                        let _ = slf.get().send_error(py, call, "Interrupted", "the server was interrupted while replying", "");
                        return Err(e);
                    }
                },
                Err(e) if e.is_instance_of::<PyException>(py) => Some(e),
                Err(e) => {
                    // KeyboardInterrupt, SystemExit in the handler: answer the call
                    // (else it and its retries would wait for nothing), then stop.
                    let _ = slf.get().send_error(py, call, "Interrupted", "the server stopped while running this call", "");
                    return Err(e);
                }
            };
            if let Some(e) = failure {
                let (kind, message, tb) = describe(py, &e);
                match slf.get().send_error(py, call, &kind, &message, &tb) {
                    Ok(_) => {}
                    Err(_) if slf.get().closing_requested() => return Ok(()),
                    Err(e) if e.is_instance_of::<PyException>(py) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Readiness descriptor: readable when a call may be waiting.
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.lock(py)?.readiness_fd().py_err(py)
    }

    /// Clients come and go, so no peer to check (asyncio layer, once per slice): it
    /// sends the errors owed to clients whose replies were given up.
    fn _check_peer(&self, py: Python<'_>) -> PyResult<()> {
        let mut guard = self.lock(py)?;
        if guard.is_closed() {
            return Err(to_py(py, Error::Closed));
        }
        guard.settle_debts();
        Ok(())
    }

    /// ``await server.recv_async(timeout=None)``.
    #[pyo3(signature = (timeout=None))]
    fn recv_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._aio")?.call_method1("recv_async", (slf, timeout))
    }

    /// ``async for request in server``.
    fn __aiter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._aio")?.call_method1("AsyncReceive", (slf,))
    }

    /// ``await server.serve_async(handler)`` (see the stub).
    fn serve_async<'py>(slf: &Bound<'py, Self>, handler: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._aio")?.call_method1("serve_async", (slf, handler))
    }

    /// True if a call may be waiting (one load per 64 clients).
    fn pending(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.pending())
    }

    /// Close (idempotent): waiting clients get `DisconnectedError`; a `recv` blocked in
    /// another thread ends within one wait slice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(mut guard) = lock_for_close(py, &self.inner, &self.closing) else { return Ok(()) };
        let server = &mut *guard;
        py.detach(|| server.close());
        Ok(())
    }

    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Clients connected now.
    #[getter]
    fn clients(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.clients())
    }

    #[getter]
    fn max_clients(&self) -> usize {
        self.max_clients
    }

    /// Requests dropped as retries or stale duplicates since creation.
    #[getter]
    fn duplicates(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.duplicates())
    }

    /// Calls whose request came through its client's call slot (the fast path of
    /// small calls: request and reply written over each other in one 256-byte slot)
    /// since creation.
    #[getter]
    fn slot_calls(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.slot_calls())
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.is_closed())
    }

    #[getter]
    fn policy(&self, py: Python<'_>) -> PyResult<String> {
        Ok(policy_name(self.lock(py)?.wait_policy()))
    }

    #[pyo3(signature = (policy, spin_us=20.0))]
    fn set_policy(&self, py: Python<'_>, policy: &str, spin_us: f64) -> PyResult<()> {
        let p = parse_policy(policy, spin_us)?;
        self.lock(py)?.set_wait_policy(p);
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __reduce__(&self, py: Python<'_>) -> PyResult<()> {
        Err(to_py(
            py,
            Error::InvalidArgument("an RpcServer cannot be pickled (one server per name); pass its name and connect an RpcClient".into()),
        ))
    }

    fn __repr__(&self) -> String {
        match self.inner.try_lock() {
            Ok(s) if s.is_closed() => "<shmplane.RpcServer closed>".into(),
            Ok(s) => format!(
                "<shmplane.RpcServer name={:?} clients={} max_clients={} policy={}>",
                s.name(),
                s.clients(),
                s.max_clients(),
                policy_name(s.wait_policy())
            ),
            Err(_) => "<shmplane.RpcServer busy>".into(),
        }
    }
}

impl PyRpcServer {
    fn closing_requested(&self) -> bool {
        self.closing.is_requested() || self.inner.try_lock().is_ok_and(|s| s.is_closed())
    }
}

/// One call received by an `RpcServer`. See the stub.
#[pyclass(module = "shmplane._shmplane", name = "Request", frozen)]
pub struct PyRequest {
    server: Py<PyRpcServer>,
    call: CallId,
    value: Py<PyAny>,
    answered: Mutex<bool>,
}

#[pymethods]
impl PyRequest {
    /// The request object.
    #[getter]
    fn value(&self, py: Python<'_>) -> Py<PyAny> {
        self.value.clone_ref(py)
    }

    /// The client's id.
    #[getter]
    fn client(&self) -> u32 {
        self.call.client
    }

    /// The call's sequence number (per client).
    #[getter]
    fn seq(&self) -> u64 {
        self.call.seq
    }

    /// The client's slot on the server.
    #[getter]
    fn slot(&self) -> usize {
        self.call.slot
    }

    /// True once the final reply was sent.
    #[getter]
    fn answered(&self) -> bool {
        *self.answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reply (see the stub).
    #[pyo3(signature = (obj, last=true, timeout=None))]
    fn reply(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, last: bool, timeout: Option<f64>) -> PyResult<bool> {
        let sent = self.server.get().send_reply(py, self.call, obj, last, timeout)?;
        if last {
            *self.answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        }
        Ok(sent)
    }

    /// Reply with an error (see the stub).
    #[pyo3(signature = (kind, message, traceback=""))]
    fn reply_error(&self, py: Python<'_>, kind: &str, message: &str, traceback: &str) -> PyResult<bool> {
        let sent = self.server.get().send_error(py, self.call, kind, message, traceback)?;
        *self.answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        Ok(sent)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let value = self.value.bind(py).repr().map_or_else(|_| "?".to_owned(), |r| r.to_string());
        let value = if value.chars().count() > 60 { format!("{}...", value.chars().take(57).collect::<String>()) } else { value };
        format!("<shmplane.Request client={:08x} seq={} value={value}>", self.call.client, self.call.seq)
    }
}

// ------------------------------------------------------------------------- client

/// A client of an `RpcServer`. See the stub.
#[pyclass(module = "shmplane._shmplane", name = "RpcClient", frozen, weakref)]
pub struct PyRpcClient {
    pub(crate) inner: Mutex<RpcClient>,
    closing: CloseFlag,
    server: String,
}

impl PyRpcClient {
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, RpcClient>> {
        lock(py, &self.inner, "RpcClient")
    }

    /// Send the request of a call (the GIL held for a small one with room).
    fn send(&self, py: Python<'_>, client: &mut RpcClient, obj: &Bound<'_, PyAny>, retry: bool, timeout: &Timeout) -> PyResult<()> {
        let max = client.max_request_len().py_err(py)?;
        with_outgoing(py, obj, max, |msg| {
            if !timeout.blocks() {
                // Only if all of it fits now (a chunked request is refused whole).
                return client.send_request(msg, retry, &mut Wait::no_wait()).map(|_| ()).py_err(py);
            }
            let mut retry = retry;
            if msg.total() <= max && msg.total() < crate::wait::GIL_RELEASE_BYTES {
                match client.send_request(msg.clone(), retry, &mut Wait::no_wait()) {
                    Ok(_) => return Ok(()),
                    // Nothing was sent: the same call (same number) again, waiting.
                    Err(Error::Full) => retry = true,
                    Err(e) => return Err(to_py(py, e)),
                }
            }
            blocking_checked(py, timeout, |py| self.closing.check(py), |mut wait| client.send_request(msg, retry, &mut wait)).map(|_| ())
        })
    }

    /// The next reply part of the current call: `(object, more)`.
    fn reply_part(&self, py: Python<'_>, client: &mut RpcClient, timeout: &Timeout) -> PyResult<(Py<PyAny>, bool)> {
        let mut spun = false;
        loop {
            let outcome = {
                let mut now = Wait::no_wait();
                match client.begin_reply(&mut now) {
                    Ok((env, incoming)) => {
                        let error = env.flags & flags::ERROR != 0;
                        Some((env, receive_within(py, incoming, error, timeout, Some(&self.closing))))
                    }
                    Err(Error::Empty) if timeout.blocks() => None,
                    Err(e) => return Err(to_py(py, e)),
                }
            };
            if let Some((env, got)) = outcome {
                client.end_reply(env, got.is_ok());
                let obj = got?;
                if env.flags & flags::ERROR != 0 {
                    let payload: Vec<u8> = obj.extract(py)?;
                    return Err(to_py(py, shmplane::rpc::decode_error(&payload)));
                }
                return Ok((obj, env.flags & flags::MORE != 0));
            }
            if !spun {
                spun = true;
                if spin_for_reply(client).py_err(py)? {
                    continue;
                }
            }
            blocking_checked(py, timeout, |py| self.closing.check(py), |mut wait| client.wait_reply(&mut wait))?;
        }
    }
}

impl PyRpcClient {
    /// `reply_part` as zero-copy views (`call(copy=False)`): a reply held in the reply
    /// channel becomes a `Lease` whose value views it; others are received by copy.
    fn reply_part_view(slf: &Bound<'_, Self>, client: &mut RpcClient, timeout: &Timeout) -> PyResult<(Py<PyAny>, bool)> {
        let py = slf.py();
        let me = slf.get();
        let mut spun = false;
        loop {
            let outcome = {
                let mut now = Wait::no_wait();
                match client.begin_reply_view(&mut now) {
                    Ok((env, shmplane::Viewed::Held(h))) => Some((env, Ok(h))),
                    Ok((env, shmplane::Viewed::Copy(incoming))) => {
                        let error = env.flags & flags::ERROR != 0;
                        Some((env, Err(receive_within(py, incoming, error, timeout, Some(&me.closing)))))
                    }
                    Err(Error::Empty) if timeout.blocks() => None,
                    Err(e) => return Err(to_py(py, e)),
                }
            };
            if let Some((env, got)) = outcome {
                let more = env.flags & flags::MORE != 0;
                match got {
                    Ok(held) => {
                        let releaser = client.reply_releaser().ok_or_else(|| to_py(py, Error::Closed));
                        // Built first: a decode that fails (a KeyboardInterrupt in an
                        // unpickler) leaves the call unanswered, for `retry=True`.
                        let value = releaser
                            .and_then(|r| crate::lease::PyLease::of_rpc_reply(py, slf, r, held))
                            .and_then(|lease| crate::lease::PyLease::build(lease.bind(py)).map(Bound::unbind));
                        client.end_reply(env, value.is_ok());
                        return Ok((value?, more));
                    }
                    Err(got) => {
                        client.end_reply(env, got.is_ok());
                        let obj = got?;
                        if env.flags & flags::ERROR != 0 {
                            let payload: Vec<u8> = obj.extract(py)?;
                            return Err(to_py(py, shmplane::rpc::decode_error(&payload)));
                        }
                        return Ok((obj, more));
                    }
                }
            }
            if !spun {
                spun = true;
                if spin_for_reply(client).py_err(py)? {
                    continue;
                }
            }
            blocking_checked(py, timeout, |py| me.closing.check(py), |mut wait| client.wait_reply(&mut wait))?;
        }
    }
}

#[pymethods]
impl PyRpcClient {
    /// Connect to server `name` (see the stub).
    #[staticmethod]
    #[pyo3(signature = (name, timeout=None, reply_capacity=DEFAULT_REPLY_CAPACITY as i64))]
    fn connect<'py>(py: Python<'py>, name: &str, timeout: Option<f64>, reply_capacity: i64) -> PyResult<Bound<'py, Self>> {
        let timeout = Timeout::new(timeout, true)?;
        let cap = crate::endpoints::capacity_arg(py, reply_capacity)?;
        let client = blocking_checked(py, &timeout, |_| Ok(()), |wait| RpcClient::connect_with(name, cap, wait))?;
        tracked(py, PyRpcClient { inner: Mutex::new(client), closing: CloseFlag::default(), server: name.to_owned() })
    }

    /// Call the server (see the stub); `copy=False`: the reply as a view.
    #[pyo3(signature = (obj, timeout=None, retry=false, copy=true))]
    fn call(slf: &Bound<'_, Self>, obj: &Bound<'_, PyAny>, timeout: Option<f64>, retry: bool, copy: bool) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let timeout = Timeout::new(timeout, true)?;
        let mut guard = me.lock(py)?;
        let client: &mut RpcClient = &mut guard;
        me.send(py, client, obj, retry, &timeout)?;
        let part = |client: &mut RpcClient| if copy { me.reply_part(py, client, &timeout) } else { PyRpcClient::reply_part_view(slf, client, &timeout) };
        let (first, more) = part(client)?;
        if more {
            // A stream answered a plain call: its parts as a list.
            let mut parts = vec![first];
            loop {
                let (p, more) = part(client)?;
                parts.push(p);
                if !more {
                    return Ok(pyo3::types::PyList::new(py, parts)?.into_any().unbind());
                }
            }
        }
        Ok(first)
    }

    /// Send a call's request only (for `stream` and asyncio).
    #[pyo3(signature = (obj, timeout=None, retry=false))]
    fn _send_call(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, timeout: Option<f64>, retry: bool) -> PyResult<u64> {
        // 0: only if it all fits now (`Full` otherwise, nothing sent).
        let timeout = Timeout::new(timeout, timeout != Some(0.0))?;
        let mut guard = self.lock(py)?;
        self.send(py, &mut guard, obj, retry, &timeout)?;
        Ok(guard.seq())
    }

    /// The next reply part of the current call as `(obj, more)`; `Empty` if none yet
    /// and `timeout == 0`, `None` once the last part was received.
    /// `copy=False`: a reply that can be a view comes as one (as `call(copy=False)`).
    #[pyo3(signature = (timeout=None, seq=None, copy=true))]
    fn _next_part(slf: &Bound<'_, Self>, timeout: Option<f64>, seq: Option<u64>, copy: bool) -> PyResult<Option<(Py<PyAny>, bool)>> {
        let py = slf.py();
        let me = slf.get();
        let block = timeout != Some(0.0);
        let timeout = Timeout::new(timeout, block)?;
        let mut guard = me.lock(py)?;
        if let Some(seq) = seq.filter(|&s| s != guard.seq()) {
            return Err(to_py(
                py,
                Error::InvalidArgument(format!(
                    "call {seq} was superseded by call {} on this client: a client makes one call at a time (the rest of call {seq}'s reply is discarded)",
                    guard.seq()
                )),
            ));
        }
        if !guard.awaiting_reply() {
            return Ok(None);
        }
        if copy {
            me.reply_part(py, &mut guard, &timeout).map(Some)
        } else {
            PyRpcClient::reply_part_view(slf, &mut guard, &timeout).map(Some)
        }
    }

    /// Iterate over a streamed reply (see the stub).
    #[pyo3(signature = (obj, timeout=None))]
    fn stream<'py>(slf: &Bound<'py, Self>, obj: &Bound<'py, PyAny>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._rpc")?.call_method1("stream", (slf, obj, timeout))
    }

    /// ``await client.call_async(obj, timeout=None, retry=False, copy=True)``.
    #[pyo3(signature = (obj, timeout=None, retry=false, copy=true))]
    fn call_async<'py>(slf: &Bound<'py, Self>, obj: &Bound<'py, PyAny>, timeout: Option<f64>, retry: bool, copy: bool) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("shmplane._aio")?.call_method1("call_async", (slf, obj, timeout, retry, copy))
    }

    /// Readiness descriptor: readable when a reply may be waiting.
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        self.lock(py)?.readiness_fd().py_err(py)
    }

    /// The server's liveness (asyncio layer, once per slice).
    fn _check_peer(&self, py: Python<'_>) -> PyResult<()> {
        self.lock(py)?.check_server().py_err(py)
    }

    /// True if the server is alive and serving.
    fn is_connected(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.is_connected())
    }

    /// Close (idempotent); a call blocked in another thread ends within one slice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(mut guard) = lock_for_close(py, &self.inner, &self.closing) else { return Ok(()) };
        let client = &mut *guard;
        py.detach(|| client.close());
        Ok(())
    }

    /// Close at process exit (`shmplane._handles`): reply views still alive die with
    /// the process, so their space is given back first and the reply channel removed.
    fn _close_at_exit(&self, py: Python<'_>) -> PyResult<()> {
        let Some(mut guard) = lock_for_close(py, &self.inner, &self.closing) else { return Ok(()) };
        let client = &mut *guard;
        py.detach(|| client.close_releasing_views());
        Ok(())
    }

    /// Replies held by live views (`call(copy=False)`) and not released yet.
    #[getter]
    fn held(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.lock(py)?.reply_holds())
    }

    /// The server's name.
    #[getter]
    fn name(&self) -> String {
        self.server.clone()
    }

    /// This client's id.
    #[getter]
    fn id(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.lock(py)?.id())
    }

    /// This client's slot on the server.
    #[getter]
    fn slot(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        Ok(self.lock(py)?.slot())
    }

    /// The last call's sequence number.
    #[getter]
    fn seq(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.lock(py)?.seq())
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.is_closed())
    }

    #[getter]
    fn policy(&self, py: Python<'_>) -> PyResult<String> {
        Ok(policy_name(self.lock(py)?.wait_policy()))
    }

    #[pyo3(signature = (policy, spin_us=20.0))]
    fn set_policy(&self, py: Python<'_>, policy: &str, spin_us: f64) -> PyResult<()> {
        let p = parse_policy(policy, spin_us)?;
        self.lock(py)?.set_wait_policy(p);
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// A copy passed to another process connects there as a client of its own.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let cls = py.get_type::<PyRpcClient>().getattr("connect")?;
        Ok(PyTuple::new(py, [cls.into_any(), PyTuple::new(py, [slf.get().server.clone()])?.into_any()])?.into_any())
    }

    fn __repr__(&self) -> String {
        match self.inner.try_lock() {
            Ok(c) if c.is_closed() => "<shmplane.RpcClient closed>".into(),
            Ok(c) => format!(
                "<shmplane.RpcClient server={:?} slot={} id={:08x} calls={} policy={}>",
                self.server,
                c.slot().map_or_else(|| "?".into(), |s| s.to_string()),
                c.id(),
                c.seq(),
                policy_name(c.wait_policy())
            ),
            Err(_) => "<shmplane.RpcClient busy>".into(),
        }
    }
}
